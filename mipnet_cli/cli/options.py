"""Options and notices shared by the commands that run the pose network (predict, video,
lambda-sweep, heatmaps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..checkpoints.zoo import ZooEntry, default_entry
from ..core.errors import MipnetError
from ..detect.base import check_sizes
from ..detect.sources import BoxSource, DetectorBoxes
from .app import say

SYNTH_DEMO = (
    "it was trained on synthetic scenes only (its poses on real photos are not meaningful). "
    "Real checkpoints: `mipnet weights list`; convert an official MIPNet/HRNet file with "
    "`mipnet weights import SRC DST` and pass --weights DST."
)


def _entry_notice(what: str, entry: ZooEntry, why: str) -> str:
    text = f"{why}: using the shipped {what} {entry.name}"
    if entry.demo:
        return f"{text}; {SYNTH_DEMO}"
    return f"{text} ({entry.description})."


Weights = Annotated[str | None, typer.Option(
    help="pose checkpoint: a file or a name from `mipnet weights list` "
         "(default: the shipped MoveNet Thunder, COCO-trained)")]
Detector = Annotated[str | None, typer.Option(
    help="person detector (default fasterrcnn_resnet50_fpn_v2, COCO weights; without them and "
         "offline, the shipped COCO YOLOX-Nano, yolox_nano)")]
DetectorWeights = Annotated[Path | None, typer.Option(
    help="local detector weights file (a converted YOLOX, or torchvision-style weights)")]
DetThresh = Annotated[float | None, typer.Option(
    min=0.0, max=1.0,
    help="minimum person-box score (default 0.5 for the detector, 0 for --boxes)")]
DetNms = Annotated[float, typer.Option(min=0.0, max=1.0, help="detector NMS IoU threshold")]
DetSize = Annotated[str | None, typer.Option(
    metavar="SIZE[,SIZE...]",
    help="detector input size in pixels, a multiple of 32: the letterbox side for YOLOX "
         "(default 416), the shorter image side for torchvision detectors (800). Several, "
         "comma-separated, run the detector at each and merge the boxes: 416,832 also finds "
         "small, distant people (YOLOX-Nano on coco_mini: person-box AP 0.33 -> 0.41) at about "
         "5x the detector's time")]


def parse_det_sizes(text: str | None) -> tuple[int, ...] | None:
    """'416,832' -> (416, 832); None stays None (the detector's own size)."""
    if text is None:
        return None
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise MipnetError(f"--det-size {text}: expected sizes such as 416 or 416,832") from None
    try:
        return check_sizes(sizes)
    except ValueError as exc:
        raise MipnetError(f"--det-size: {exc}") from None
Instances = Annotated[int | None, typer.Option(
    min=1, help="instances (λ values) per box (default: all the model has)")]
Flip = Annotated[bool, typer.Option("--flip/--no-flip", help="average with the mirrored crop")]
CropBatch = Annotated[int, typer.Option(min=1, help="person crops per network call")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:1, ...")]
Half = Annotated[bool, typer.Option(
    help="half-precision pose network: fp16 on CUDA; bf16 on CPUs that compute it natively "
         "(AVX512-BF16, AMX: about 1.7x faster a MoveNet crop, see benchmarks/RESULTS.md)")]
Rescore = Annotated[str, typer.Option(
    help="pose score besides the box score: keypoints (mean confident joint score, official) "
         "or psm (the OKS the single-stage network's pose scoring module predicts)")]
Scorer = Annotated[str | None, typer.Option(
    help="single-stage (pfs) checkpoint whose PSM scores poses with --rescore psm (none ships: "
         "train one with configs/pfs_nano.toml)")]
KptThresh = Annotated[float | None, typer.Option(
    help="joints below this confidence are not drawn, labelled visible in --coco nor tracked "
         "(default: the model's, 0.3 for heatmap networks; a single-stage model's joints carry "
         "its pose score, and its default is the F1-best score on its validation set)")]
InputSize = Annotated[int | None, typer.Option(
    min=32, max=2048,
    help="whole-image networks (MoveNet MultiPose, pfs): the side of the square letterbox the "
         "image is scaled into (never enlarged by MultiPose), a multiple of 32; larger finds "
         "smaller people, slower (default: the checkpoint's, 384 for MoveNet MultiPose; with "
         "--recover it sets the recovery network's)")]
MaxPeople = Annotated[int | None, typer.Option(
    min=1, help="whole-image networks: the most people decoded per image (default: the "
                "checkpoint's; 20 for MoveNet MultiPose, which was published capped at 6)")]
Recover = Annotated[bool | None, typer.Option(
    "--recover/--no-recover",
    help="crowd recovery: also run a whole-image network (MoveNet MultiPose) on each image and "
         "merge its poses with the top-down ones (scores halved, OKS-NMS 0.7), so that people "
         "without a box, and the occluded person whose top-down pose copied the one in front, "
         "come back (coco_mini AP +1.6, held-out composites +1.2, 0 to +0.6 on the other real "
         "sets; 0.2-0.3 s more per image on 2 CPU cores). Default: on for top-down networks",
    show_default=False)]
RecoverWeights = Annotated[str | None, typer.Option(
    help="whole-image checkpoint of --recover (default: the shipped MoveNet MultiPose)")]
ShowBoxes = Annotated[bool, typer.Option(help="draw the person boxes")]
ShowScores = Annotated[bool, typer.Option(help="write pose and joint scores")]


def model_notices(weights: str | None, source: BoxSource | None = None,
                  detector: str | None = None, min_instances: int = 1) -> None:
    """Say which shipped models run when none was named, and where they come from."""
    if weights is None:
        entry = default_entry("pose", min_instances)
        if entry is not None:
            why = ("no --weights given" if min_instances <= 1 else
                   f"no --weights given and this needs a network with {min_instances} or more "
                   "instances (λ values)")
            say("note:", "yellow", _entry_notice("pose model", entry, why))
    if isinstance(source, DetectorBoxes) and source.entry is not None and detector is None:
        why = ("torchvision's COCO person detector is not cached and cannot be downloaded"
               if source.fallback else "no detector weights given")
        say("note:", "yellow", _entry_notice("detector", source.entry, why))
