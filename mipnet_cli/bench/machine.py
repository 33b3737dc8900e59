"""Facts about the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from typing import Any

import av
import torch
import torchvision

from ..core.hardware import cpu_model


def _nvidia_driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def machine_info(device: torch.device) -> dict[str, Any]:
    """The hardware and software the numbers were measured on."""
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pyav": av.__version__,
        "device": str(device),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "driver": _nvidia_driver(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine."""
    gpu = info.get("gpu")
    gpu_text = (f"{gpu['name']} ({gpu['memory_gib']} GiB, driver {gpu['driver']}, "
                f"CUDA {gpu['cuda']})" if gpu else "no GPU")
    return (f"{info['cpu']}, {info['cpu_cores_usable']} cores ({info['torch_threads']} torch "
            f"threads), {gpu_text}; torch {info['torch']}, torchvision {info['torchvision']}; "
            f"load average at start {info['load_average']}")
