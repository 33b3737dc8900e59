"""The full speed matrix: pose network variants, crop + decode, video pipeline, targets.

    python benchmarks/speed.py                       # CPU or GPU, the default matrix
    python benchmarks/speed.py --gpu-targets         # exactly the GPU targets (needs CUDA)

Prints rich tables and writes JSON (atomically) to --out. Everything is measured in this one
process; variants are interleaved round-robin after warm-up and reported as medians, ratios as
medians of per-round ratios (see mipnet_cli/bench.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from mipnet_cli.bench import (  # noqa: E402
    FLIP_CHOICES,
    LAYOUT_CHOICES,
    NetworkSettings,
    PipelineSettings,
    default_detector,
    machine_line,
    parse_size,
    result_tables,
    run_bench,
    write_reports,
)
from mipnet_cli.core.hardware import pick_device  # noqa: E402
from mipnet_cli.detect.torchvision_detectors import DEFAULT_DETECTOR  # noqa: E402

GPU_TARGETS_COMMAND = ("python benchmarks/speed.py --gpu-targets --out benchmarks/speed_gpu.json "
                       "--markdown benchmarks/speed_gpu.md")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 gives stable ratios on a shared CPU)")
    p.add_argument("--arch", default="hrnet_w32")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--flip", choices=FLIP_CHOICES, default="both")
    p.add_argument("--dtypes", nargs="+", default=None,
                   help="default: fp32 on the CPU; fp32 fp16 bf16 on CUDA")
    p.add_argument("--layout", choices=LAYOUT_CHOICES, default="both")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile'd")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-network", action="store_true")
    p.add_argument("--no-pipeline", action="store_true")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", default="1280x720", help="synthetic video WIDTHxHEIGHT")
    p.add_argument("--people", type=int, default=8)
    p.add_argument("--video", default=None, help="an existing video instead of a synthetic one")
    p.add_argument("--detector", default="auto", help="auto, none or a torchvision detector")
    p.add_argument("--detector-weights", default="auto",
                   help="auto (the shipped file, else torchvision's DEFAULT if cached, else "
                        "random init), none (random init), a file or a torchvision tag")
    p.add_argument("--boxes", choices=("auto", "gt", "detector"), default="auto",
                   help="boxes for the pose stages (auto: the detector's when it has trained "
                        "weights, else the ground truth; the detector always runs)")
    p.add_argument("--half", action="store_true", help="fp16 pose network in the pipeline")
    p.add_argument("--pipeline-repeats", type=int, default=2)
    p.add_argument("--synth-workers", type=int, default=1)
    p.add_argument("--gpu-targets", action="store_true",
                   help="HRNet-W32 N=2 256x192 fp16 batch 64; 1080p video, 10 people, "
                        f"{DEFAULT_DETECTOR}, fp16")
    p.add_argument("--out", type=Path, default=Path("benchmarks/speed.json"))
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown")
    return p.parse_args()


def _gpu_target_settings(a: argparse.Namespace) -> tuple[NetworkSettings, PipelineSettings]:
    """Exactly what the GPU targets name; --compile adds the compiled variants."""
    net = NetworkSettings(arch="hrnet_w32", image_size=(256, 192), batches=(64,),
                          flips=(False, True), dtypes=("fp16",), layouts=LAYOUT_CHOICES["both"],
                          compiled=(False, True) if a.compile else (False,),
                          repeats=max(a.repeats, 10), warmup=max(a.warmup, 3))
    pipe = PipelineSettings(arch="hrnet_w32", frames=120, width=1920, height=1080, people=10,
                            detector=DEFAULT_DETECTOR, detector_weights=a.detector_weights,
                            boxes=a.boxes, flip=True, half=True, repeats=a.pipeline_repeats,
                            synth_workers=max(a.synth_workers, 8))
    return net, pipe


def main() -> None:
    a = _args()
    device = pick_device(a.device)
    console = Console(width=max(Console().width, 150))  # the tables are wide
    if a.gpu_targets:
        if device.type != "cuda":
            raise SystemExit("--gpu-targets needs a CUDA GPU (none here): the GPU targets are "
                             f"not measured. On a GPU machine: {GPU_TARGETS_COMMAND}")
        net, pipe = _gpu_target_settings(a)
    else:
        dtypes = tuple(a.dtypes or (("fp32", "fp16", "bf16") if device.type == "cuda"
                                    else ("fp32",)))
        net = NetworkSettings(
            arch=a.arch, batches=tuple(a.batches), flips=FLIP_CHOICES[a.flip], dtypes=dtypes,
            layouts=LAYOUT_CHOICES[a.layout], compiled=(False, True) if a.compile else (False,),
            repeats=a.repeats, warmup=a.warmup)
        width, height = parse_size(a.size)
        detector = {"auto": default_detector(device), "none": None}.get(a.detector, a.detector)
        pipe = PipelineSettings(
            arch=a.arch, frames=a.frames, width=width, height=height, people=a.people,
            video=a.video, detector=detector, boxes=a.boxes,
            detector_weights=a.detector_weights,
            half=a.half and device.type == "cuda", repeats=a.pipeline_repeats,
            synth_workers=a.synth_workers)
    result = run_bench(device, None if a.no_network else net, None if a.no_pipeline else pipe,
                       flops_arch="hrnet_w32", threads=a.threads,
                       progress=lambda msg: console.log(msg, highlight=False))
    result["command"] = "python " + " ".join(sys.argv)
    console.print(machine_line(result["machine"]), highlight=False)
    for table in result_tables(result):
        console.print(table)
    write_reports(result, a.out, a.markdown, console)


if __name__ == "__main__":
    main()
