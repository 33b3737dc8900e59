"""`--half` on a CPU: bf16 autocast for the pose network, against fp32, side by side.

For the shipped converted MoveNets, on the real annotated sets in ../shared/realdata with
ground-truth boxes and flip test: pose AP in fp32 and in bf16 (the same crops, the same
decoding in fp32). Then the time per crop of the engine's network step (flip test included),
fp32 and bf16 interleaved round-robin in one process, at 1 and 2 threads (medians; the ratio is
the median of the per-round ratios). Needs a CPU with native bf16 (AVX512-BF16 or AMX).

Usage (from the repository root): python benchmarks/cpu_half.py [--rounds 5] [--json PATH]
Writes benchmarks/cpu_half.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_networks import REAL, SETS, crowdpose_as_coco17, pose_ap  # noqa: E402

from mipnet_cli.bench.timing import (  # noqa: E402
    Clock,
    _median,
    _paired_ratio,
    run_interleaved,
    torch_threads,
)
from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import autocast_dtype, cpu_model  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402

MODELS = ("movenet-thunder-coco", "movenet-lightning-coco")
CROPS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "cpu_half.json")
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"{REAL} is absent: this benchmark needs ../shared/realdata")
    if autocast_dtype(torch.device("cpu")) is not torch.bfloat16:
        raise SystemExit("this CPU has no native bf16: --half is refused here")
    result: dict = {"machine": cpu_model(), "date": time.strftime("%Y-%m-%d"), "ap": {},
                    "ms_per_crop": {}}
    with tempfile.TemporaryDirectory() as tmp:
        anns = {name: ann for name, (ann, _) in SETS.items()}
        anns["crowdpose"] = crowdpose_as_coco17(SETS["crowdpose"][0],
                                                Path(tmp) / "crowdpose_coco17.json")
        for model in MODELS:
            for name, (_, images) in SETS.items():
                for half in (False, True):
                    m = pose_ap(model, anns[name], images, None, True, half)
                    key = f"{model} | {name} | {'bf16' if half else 'fp32'}"
                    result["ap"][key] = m
                    print(f"{key:50s} AP {m['AP']:.3f} AR {m['AR']:.3f}", flush=True)
    for model in MODELS:
        path = get_entry(model).local_path()
        engines = {label: PoseEstimator.from_checkpoint(path, EngineOptions(half=half), "cpu")
                   for label, half in (("fp32", False), ("bf16", True))}
        size = engines["fp32"].input_size
        crops = torch.rand(CROPS, 3, *size) * 2 - 1
        for threads in (1, 2):
            with torch_threads(threads):
                times = run_interleaved({k: (lambda e=e, c=crops: e.infer(c))
                                         for k, e in engines.items()},
                                        args.rounds, 1, Clock(torch.device("cpu")))
            row = {k: round(1000 * _median(t) / CROPS, 1) for k, t in times.items()}
            row["fp32 / bf16"] = round(_paired_ratio(times["fp32"], times["bf16"]), 2)
            result["ms_per_crop"][f"{model} | {threads} thread{'s' if threads > 1 else ''}"] = row
            print(f"{model} {threads} thread(s): {row}", flush=True)
    write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
