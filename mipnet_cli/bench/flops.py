"""FLOPs of the pose networks (torch's flop counter)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..models import build_model, instance_lambdas


def count_flops(arch: str, image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """FLOPs per crop (conv and matmul, `FlopCounterMode`, multiply-add = 2) for N=1, N=2 run as
    two passes and N=2 with the shared trunk; counted on the meta device (no compute)."""
    single = build_model(arch, num_instances=1, image_size=image_size).eval().to("meta")
    multi = build_model(arch, num_instances=2, image_size=image_size).eval().to("meta")
    h, w = multi.config.image_size
    x = torch.empty(1, 3, h, w, device="meta")
    lams = instance_lambdas(2).to("meta")
    with torch.inference_mode():
        counts = {
            "n1": _flops(lambda: single(x)),
            "n2_separate": _flops(lambda: [multi(x, lam[None]) for lam in lams]),
            "n2_shared": _flops(lambda: multi.forward_multi(x, lams)),
        }
    return {
        "arch": arch,
        "image_size": [h, w],
        "gflops_per_crop": {k: round(v / 1e9, 3) for k, v in counts.items()},
        "ratio_to_n1": {k: round(v / counts["n1"], 4) for k, v in counts.items()},
        "counter": "torch.utils.flop_counter.FlopCounterMode (conv + matmul; multiply-add = 2)",
    }


def _flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------- network
