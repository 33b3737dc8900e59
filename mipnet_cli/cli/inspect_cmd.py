"""`mipnet lambda-sweep` and `mipnet heatmaps`: what the network does inside one person box."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table
from rich.text import Text

from ..annotate.images import Annotator, ImageFailure, load_estimator
from ..annotate.video import video_box_source
from ..core.errors import MipnetError
from ..core.files import check_outputs, finite
from ..core.results import Box
from ..detect.boxes import image_ids_by_filename
from ..inspect.figures import (
    contact_sheet,
    save_figure,
    save_gif,
    sweep_frames,
    trajectory_figure,
    write_heatmap_grids,
)
from ..inspect.sweep import lambda_sweep
from ..media.images import read_image
from ..media.render import save_image
from ..pose.engine import EngineOptions, PoseEstimator
from . import options as opt
from .app import INSPECT, app, console

BOX_HELP = "the person box as x,y,w,h in pixels (instead of detected or listed boxes)"
Boxes = Annotated[Path | None, typer.Option(help="COCO detection results (as for predict)")]
Gt = Annotated[Path | None, typer.Option(help="COCO annotation file (as for predict)")]


def _parse_box(text: str) -> Box:
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise MipnetError(f"--box {text!r}: expected four numbers x,y,w,h") from None
    if not finite((x, y, w, h)):
        raise MipnetError(f"--box {text!r}: every number must be finite (no nan or inf)")
    if w <= 0 or h <= 0:
        raise MipnetError(f"--box {text!r}: width and height must be positive")
    return Box(xyxy=np.array([x, y, x + w, y + h]), score=1.0, source="file", id=0)


def _photo_boxes(path: Path, image: np.ndarray, estimator: PoseEstimator, weights: str | None,
                 box: str | None, boxes: Path | None, gt: Path | None, detector: str | None,
                 detector_weights: Path | None, det_thresh: float | None,
                 device: str, min_instances: int) -> list[Box]:
    """The person boxes of one photo: `--box`, else those of --boxes/--gt/the detector (image
    ids as `mipnet predict` matches them). Says so when demo models are in use."""
    if box is not None:
        if any(v is not None for v in (boxes, gt, detector, detector_weights)):
            raise MipnetError("--box is the box: leave out --boxes, --gt and the detector")
        opt.model_notices(weights, min_instances=min_instances)
        return [_parse_box(box)]
    source = video_box_source(boxes=boxes, gt=gt, detector=detector,
                              detector_weights=detector_weights, det_thresh=det_thresh,
                              device=device)
    opt.model_notices(weights, source, detector, min_instances)
    ids = image_ids_by_filename(gt) if gt is not None else None
    image_id = Annotator(estimator, source, ids, ids_from=str(gt)).assign_ids([path])[0]
    if isinstance(image_id, ImageFailure):
        raise MipnetError(f"{path}: {image_id.reason}")
    found = source.boxes([image], [image_id])[0]
    if not found:
        raise MipnetError(f"{path}: no person box (pass --box x,y,w,h)")
    return found


def _pick(found: list[Box], index: int | None) -> list[Box]:
    if index is None:
        return found
    if not 0 <= index < len(found):
        raise MipnetError(f"--box-index {index}: the image has {len(found)} boxes "
                          f"(0 to {len(found) - 1})")
    return [found[index]]


@app.command("lambda-sweep", rich_help_panel=INSPECT)
def lambda_sweep_cmd(
    photo: Path = typer.Argument(..., help="an image file"),
    box: str | None = typer.Option(None, help=BOX_HELP),
    box_index: int = typer.Option(
        0, min=0, help="which of the detected / listed boxes (best score first)"),
    steps: int = typer.Option(11, min=2, max=201, help="λ values from [1, 0] to [0, 1]"),
    out: Path = typer.Option(Path("."), help="folder for the sheet, GIF and plot"),
    weights: opt.Weights = None,
    boxes: Boxes = None,
    gt: Gt = None,
    detector: opt.Detector = None,
    detector_weights: opt.DetectorWeights = None,
    det_thresh: opt.DetThresh = None,
    flip: opt.Flip = True,
    columns: int = typer.Option(6, min=1, help="pictures per row of the contact sheet"),
    cell_height: int = typer.Option(256, min=32, help="height of each picture in pixels"),
    fps: float = typer.Option(4.0, min=0.1, help="GIF frames per second"),
    device: opt.Device = "auto",
) -> None:
    """Slide λ from the box's own person to the nearest other one and watch the joints move.

    λ goes from [1, 0] (the box's own person) to [0, 1] (the nearest other person); writes a
    contact sheet, an animated GIF and each joint's trajectory.
    """
    check_outputs({"--out": out}, inputs=[photo], folders=["--out"])
    image = read_image(photo)
    estimator = load_estimator(weights, EngineOptions(flip_test=flip), device, min_instances=2)
    chosen = _pick(_photo_boxes(photo, image, estimator, weights, box, boxes, gt, detector,
                                detector_weights, det_thresh, device, 2),
                   None if box is not None else box_index)[0]
    try:
        sweep = lambda_sweep(estimator, image, chosen.xywh, steps)
    except ValueError as exc:
        raise MipnetError(str(exc)) from None
    kps = estimator.keypoint_set
    frames = sweep_frames(image, sweep, kps, cell_height)
    stem = f"{photo.stem}_box{chosen.id}_lambda"
    sheet_path, gif_path, plot_path = (out / f"{stem}_sheet.png", out / f"{stem}.gif",
                                       out / f"{stem}_xy.png")
    check_outputs({"sheet": sheet_path, "GIF": gif_path, "plot": plot_path}, inputs=[photo])
    save_image(sheet_path, contact_sheet(frames, min(columns, steps)))
    save_gif(gif_path, frames, fps)
    save_figure(trajectory_figure(sweep, kps), plot_path)

    shift = np.linalg.norm(sweep.keypoints[-1, :, :2] - sweep.keypoints[0, :, :2], axis=1)
    table = Table(title=f"{photo.name}, box {chosen.id} {np.round(chosen.xywh, 1).tolist()}: "
                        "joint shift from λ=[1, 0] to [0, 1]")
    table.add_column("joint")
    table.add_column("shift (px)", justify="right")
    for name, d in zip(kps.names, shift, strict=True):
        table.add_row(name, f"{d:.1f}")
    table.add_row(Text("median", style="bold"), Text(f"{np.median(shift):.1f}", style="bold"))
    console.print(table)
    for path in (sheet_path, gif_path, plot_path):
        console.print(f"wrote {path}", highlight=False)


@app.command(rich_help_panel=INSPECT)
def heatmaps(
    photo: Path = typer.Argument(..., help="an image file"),
    box: str | None = typer.Option(None, help=BOX_HELP),
    box_index: int | None = typer.Option(
        None, min=0, help="only this box of the detected / listed ones (default: all)"),
    out: Path = typer.Option(Path("."), help="folder for the grids (one PNG per box)"),
    weights: opt.Weights = None,
    boxes: Boxes = None,
    gt: Gt = None,
    detector: opt.Detector = None,
    detector_weights: opt.DetectorWeights = None,
    det_thresh: opt.DetThresh = None,
    instances: int | None = typer.Option(
        None, min=1, help="instances (λ rows) to show (default: all the model has)"),
    flip: opt.Flip = True,
    cell_height: int = typer.Option(160, min=32, help="height of each cell in pixels"),
    device: opt.Device = "auto",
) -> None:
    """Show the heatmaps of every instance λ for each person box of a photo.

    Per box, a grid over the crop: one row per instance λ, one column per joint and one for
    their maximum, on a shared colour scale.
    """
    check_outputs({"--out": out}, inputs=[photo], folders=["--out"])
    image = read_image(photo)
    estimator = load_estimator(weights, EngineOptions(flip_test=flip, instances=instances),
                               device, min_instances=2)
    chosen = _pick(_photo_boxes(photo, image, estimator, weights, box, boxes, gt, detector,
                                detector_weights, det_thresh, device, 2),
                   None if box is not None else box_index)
    for path in write_heatmap_grids(out, photo.stem, image, estimator, chosen, cell_height):
        console.print(f"wrote {path}", highlight=False)

