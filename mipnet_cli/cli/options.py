"""Options and notices shared by the commands that run the pose network (predict, video,
lambda-sweep, heatmaps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..annotate import BoxSource, DetectorBoxes
from .app import err_console

DEMO_NOTICE = (
    "[yellow]note:[/] no --weights given: using the shipped demo model, trained on synthetic "
    "scenes only (its poses on real photos are not meaningful). Real checkpoints: "
    "`mipnet weights list`, then `mipnet weights pull NAME`; or convert an official MIPNet/HRNet "
    "file with `mipnet weights import SRC DST` and pass --weights DST."
)
DEMO_DETECTOR_NOTICE = (
    "[yellow]note:[/] torchvision's COCO person detector is not cached and cannot be downloaded: "
    "using the shipped demo detector, trained on synthetic scenes only (give --boxes, --gt or "
    "--detector-weights for real photos)."
)

Weights = Annotated[str | None, typer.Option(
    help="pose checkpoint: a file or a name from `mipnet weights list` "
         "(default: the shipped synthetic demo model)")]
Detector = Annotated[str | None, typer.Option(
    help="person detector (default fasterrcnn_resnet50_fpn_v2, COCO weights; without them and "
         "offline, the shipped synthetic-only demo detector)")]
DetectorWeights = Annotated[Path | None, typer.Option(
    help="local detector weights file (e.g. saved by PersonDetector.save)")]
DetThresh = Annotated[float | None, typer.Option(
    min=0.0, max=1.0,
    help="minimum person-box score (default 0.5 for the detector, 0 for --boxes)")]
DetNms = Annotated[float, typer.Option(min=0.0, max=1.0, help="detector NMS IoU threshold")]
Instances = Annotated[int | None, typer.Option(
    min=1, help="instances (λ values) per box (default: all the model has)")]
Flip = Annotated[bool, typer.Option("--flip/--no-flip", help="average with the mirrored crop")]
CropBatch = Annotated[int, typer.Option(min=1, help="person crops per network call")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:1, ...")]
Half = Annotated[bool, typer.Option(help="fp16 inference (CUDA only)")]
ShowBoxes = Annotated[bool, typer.Option(help="draw the person boxes")]
ShowScores = Annotated[bool, typer.Option(help="write pose and joint scores")]


def demo_notices(weights: str | None, source: BoxSource | None = None,
                 detector: str | None = None) -> None:
    """Say so when the shipped synthetic-only pose model or detector is in use."""
    if weights is None:
        err_console.print(DEMO_NOTICE, highlight=False, soft_wrap=True)
    if isinstance(source, DetectorBoxes) and source.demo and detector is None:
        err_console.print(DEMO_DETECTOR_NOTICE, highlight=False, soft_wrap=True)
