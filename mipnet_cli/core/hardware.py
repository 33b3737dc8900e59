"""What machine this is (for benchmark reports and training provenance) and which reduced
precision it computes natively."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision for mixed-precision training and `--half` inference on `device`:
    fp16 on CUDA, bf16 on CPUs that compute it natively (AVX512-BF16, AMX), None elsewhere."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and \
            torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, else CUDA when present, else the CPU."""
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
