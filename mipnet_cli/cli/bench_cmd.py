"""`mipnet bench`: a quick speed check of the pose network, crop + decode and the video pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from ..bench import (
    DTYPES,
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
from ..core.errors import MipnetError
from ..core.hardware import pick_device
from .app import MODELS, app, console

EXAMPLES = """
Examples:

  mipnet bench                                      (hrnet_w32, batch 8, a short video)

  mipnet bench --batch 1 --batch 8 --flip both --layout both --no-pipeline

  mipnet bench --device cuda --dtype fp32 --dtype fp16 --batch 64 --compile

The full matrix and the GPU targets: python benchmarks/speed.py [--gpu-targets].
"""


@app.command(epilog=EXAMPLES, rich_help_panel=MODELS)
def bench(
    arch: str = typer.Option("hrnet_w32", help="pose architecture (see `mipnet models`)"),
    batch: list[int] = typer.Option([8], "--batch", "-b", help="crops per call (repeatable)"),
    flip: str = typer.Option("off", help="flip test: off, on or both"),
    dtype: list[str] = typer.Option(
        ["fp32"], help=f"network dtype, repeatable: {', '.join(DTYPES)} (fp16 on CUDA only)"),
    layout: str = typer.Option("contiguous", help="contiguous, channels_last or both"),
    compile_: bool = typer.Option(False, "--compile", help="also measure torch.compile'd"),
    repeats: int = typer.Option(5, min=1, help="interleaved rounds (medians are reported)"),
    warmup: int = typer.Option(1, min=0, help="rounds run first and discarded"),
    crop_decode: bool = typer.Option(True, help="measure warp_crops + decode_heatmaps"),
    pipeline: bool = typer.Option(True, help="run the video pipeline end to end"),
    frames: int = typer.Option(6, min=1, help="frames of the synthetic video"),
    size: str = typer.Option("640x360", help="synthetic video size WIDTHxHEIGHT"),
    people: int = typer.Option(3, min=0, help="people in the synthetic video"),
    video: Path | None = typer.Option(
        None, help="an existing video instead (ground truth beside it as .json for gt boxes)"),
    detector: str = typer.Option(
        "auto", help="detector name, 'none' (ground-truth boxes), or auto "
                     "(fasterrcnn_resnet50_fpn_v2 on CUDA, the shipped synthetic-person "
                     "detector on the CPU)"),
    detector_weights: str = typer.Option(
        "auto", help="weights file, torchvision tag, 'none' (random init: timed, boxes from "
                     "the ground truth) or auto (the shipped file, else torchvision's DEFAULT "
                     "if cached, else random init)"),
    pipeline_flip: bool = typer.Option(True, "--pipeline-flip/--no-pipeline-flip",
                                       help="flip test in the video pipeline"),
    half: bool = typer.Option(False, help="half-precision pose network in the pipeline (fp16 "
                                          "on CUDA, bf16 on CPUs with native bf16)"),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ..."),
    threads: int | None = typer.Option(
        None, min=1, help="torch CPU threads (default: torch's; 1 gives stable ratios on a "
                          "CPU that other work shares)"),
    json_out: Path = typer.Option(Path("bench.json"), "--json", help="where to write the JSON"),
) -> None:
    """Measure the speed of the pose network, crop + decode and the video pipeline.

    Network variants: N=1, N=2 as two passes and N=2 with the shared trunk, measured
    interleaved in one process. Prints tables and writes JSON (--json).
    """
    if flip not in FLIP_CHOICES or layout not in LAYOUT_CHOICES:
        raise MipnetError(f"--flip takes {', '.join(FLIP_CHOICES)}; --layout takes "
                          f"{', '.join(LAYOUT_CHOICES)}")
    dev = pick_device(device)
    net = NetworkSettings(
        arch=arch, batches=tuple(batch), flips=FLIP_CHOICES[flip], dtypes=tuple(dtype),
        layouts=LAYOUT_CHOICES[layout], compiled=(False, True) if compile_ else (False,),
        repeats=repeats, warmup=warmup, crop_decode=crop_decode)
    pipe = None
    if pipeline:
        width, height = parse_size(size)
        pipe = PipelineSettings(
            arch=arch, frames=frames, width=width, height=height, people=people,
            video=str(video) if video is not None else None,
            detector=None if detector == "none" else
            (default_detector(dev) if detector == "auto" else detector),
            detector_weights=detector_weights,
            flip=pipeline_flip, half=half)
    with console.status("measuring") as status:
        result = run_bench(dev, net, pipe, flops_arch=arch, threads=threads,
                           progress=lambda msg: status.update(f"measuring: {msg}"))
    console.print(machine_line(result["machine"]), highlight=False)
    for table in result_tables(result):
        console.print(table)
    write_reports(result, json_out, None, console)
