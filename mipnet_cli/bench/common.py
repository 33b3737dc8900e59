"""Settings shared by the benchmark modules: variant axes, targets, the default detector."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.errors import MipnetError
from ..detect.torchvision_detectors import DEFAULT_DETECTOR

MODES = ("n1", "n2_separate", "n2_shared")
MODE_LABELS = {"n1": "N=1", "n2_separate": "N=2 separate", "n2_shared": "N=2 shared trunk"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ("contiguous", "channels_last")
CPU_DETECTOR = "yolox_nano"  # the shipped COCO YOLOX-Nano

# Targets (see benchmarks/RESULTS.md): ratios are checked on the CPU, absolute rates on a GPU.
SHARED_OVER_N1_MAX = 1.45
SEPARATE_OVER_SHARED_MIN = 1.35
CROP_DECODE_FRACTION_MAX = 0.10
PIPELINE_OVER_BOUND_MIN = 0.85
GPU_CROPS_PER_S_MIN = 3000.0
GPU_VIDEO_FPS_MIN = 25.0

Progress = Callable[[str], None]

# Command-line spellings of the variant axes.
FLIP_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}
LAYOUT_CHOICES = {"contiguous": ("contiguous",), "channels_last": ("channels_last",),
                  "both": LAYOUTS}


def parse_size(text: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise MipnetError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    return w, h


def default_detector(device: torch.device) -> str:
    """torchvision's Faster R-CNN R50-FPN v2 on a GPU; on the CPU (where that one takes
    seconds a frame) the shipped COCO YOLOX-Nano."""
    return DEFAULT_DETECTOR if device.type == "cuda" else CPU_DETECTOR


# ----------------------------------------------------------------------------- machine, timing
