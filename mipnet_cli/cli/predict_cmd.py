"""`mipnet predict`: poses for image files, written as COCO results, a COCO dataset, overlays."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..annotate.images import Annotator, ImageFailure, collect_inputs
from ..core.errors import MipnetError
from ..core.files import check_outputs
from ..core.results import ImagePoses
from ..core.signals import stop_requests
from ..inspect.figures import write_heatmap_grids
from ..media.writers import (
    overlay_path,
    unique_names,
    write_coco_dataset,
    write_overlay,
    write_pose_results,
)
from ..pose.engine import EngineOptions
from . import options as opt
from .app import ANNOTATE, RateColumn, app, console, err_console, say, styled

EXAMPLES = """
Examples:

  mipnet predict photos/ --out overlays/ --json results.json

  mipnet predict "shots/*.jpg" --coco dataset.json      (import into CVAT / Label Studio)

  mipnet predict val2017/ --gt person_keypoints_val2017.json --json results.json

  mipnet predict val2017/ --boxes dets.json --gt person_keypoints_val2017.json --json r.json
"""


@app.command(epilog=EXAMPLES, rich_help_panel=ANNOTATE)
def predict(
    inputs: list[str] = typer.Argument(
        ..., metavar="INPUT",
        help="image files, folders or quoted glob patterns ('shots/**/*.jpg')"),
    weights: opt.Weights = None,
    detector: opt.Detector = None,
    detector_weights: opt.DetectorWeights = None,
    det_thresh: opt.DetThresh = None,
    det_nms: opt.DetNms = 0.5,
    det_size: opt.DetSize = None,
    boxes: Path | None = typer.Option(
        None, help="COCO detection results [{image_id, category_id, bbox, score}] to use as "
                   "person boxes (images matched by --gt, else by numeric file names)"),
    gt: Path | None = typer.Option(
        None, help="COCO annotation file: image ids by file name, and its person boxes "
                   "unless --boxes or --detector is given"),
    instances: opt.Instances = None,
    instance_decay: float = typer.Option(
        0.5, min=0.0, max=1.0, help="box-score factor of secondary instances"),
    flip: opt.Flip = True,
    dark: bool = typer.Option(False, help="DARK sub-pixel decoding"),
    batch_size: int = typer.Option(8, min=1, help="images per step"),
    crop_batch: opt.CropBatch = 64,
    device: opt.Device = "auto",
    half: opt.Half = False,
    rescore: opt.Rescore = "keypoints",
    scorer: opt.Scorer = None,
    input_size: opt.InputSize = None,
    max_people: opt.MaxPeople = None,
    recover: opt.Recover = None,
    recover_weights: opt.RecoverWeights = None,
    recursive: bool = typer.Option(False, help="search folders recursively"),
    json_out: Path | None = typer.Option(
        None, "--json", help="write COCO keypoint results (with box_id and instance)"),
    coco: Path | None = typer.Option(
        None, help="write a COCO person-keypoints dataset (for CVAT, Label Studio, ...)"),
    out: Path | None = typer.Option(None, help="folder for skeleton overlays"),
    kpt_thresh: opt.KptThresh = None,
    radius: int | None = typer.Option(None, min=1, help="joint radius in pixels (default: auto)"),
    thickness: int | None = typer.Option(
        None, min=1, help="limb thickness in pixels (default: auto)"),
    show_boxes: opt.ShowBoxes = False,
    show_scores: opt.ShowScores = False,
    heatmaps: bool = typer.Option(
        False, help="also write a heatmap grid per person box beside each overlay (needs --out)"),
) -> None:
    """Estimate every person's pose in images, including people hidden behind others.

    Per box, one pose per instance λ: 0 is the box's own person, 1 the nearest other (often hidden).

    Unreadable files are reported and skipped; the exit code is then 1. Ctrl-C (or SIGTERM)
    stops after the current images and writes the results of those done (exit code 130/143).
    """
    files, failures = collect_inputs(inputs, recursive=recursive)
    for failure in failures:
        say("skipped", "red", f"{failure.path}: {failure.reason}")
    names = unique_names(files)
    if heatmaps and out is None:
        raise MipnetError("--heatmaps writes its grids beside the overlays: give --out")
    check_outputs({"--json": json_out, "--coco": coco, "--out": out},
                  inputs=[*files, *(p for p in (boxes, gt, detector_weights) if p is not None)],
                  folders=["--out"])
    if out is not None:
        for path, name in zip(files, names, strict=True):
            if overlay_path(out, name).resolve() == path.resolve():
                raise MipnetError(f"--out {out} would overwrite the input {path}; "
                                  "choose another folder")
    engine = EngineOptions(flip_test=flip, dark=dark, instances=instances,
                           instance_decay=instance_decay, batch_size=crop_batch, half=half,
                           rescore=rescore, input_size=input_size, max_people=max_people)
    annotator = Annotator.from_options(
        weights, detector=detector, detector_weights=detector_weights, det_thresh=det_thresh,
        det_nms=det_nms, det_sizes=opt.parse_det_sizes(det_size), boxes=boxes, gt=gt,
        engine=engine, device=device, images_per_batch=batch_size, scorer=scorer,
        recover=recover, recover_weights=recover_weights)
    opt.model_notices(weights, annotator.box_source, detector)
    matches = annotator.check_box_matches(files)
    if matches is not None:
        say("note:", "yellow", matches)
    kps = annotator.estimator.keypoint_set
    if kpt_thresh is None:
        kpt_thresh = annotator.estimator.kpt_thresh
    name_of = {str(p): n for p, n in zip(files, names, strict=True)}

    done: list[ImagePoses] = []
    start = time.perf_counter()
    columns = (TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), RateColumn("img/s"),
               TimeElapsedColumn())
    with (Progress(*columns, console=err_console, transient=True) as progress,
          stop_requests() as stop):
        task = progress.add_task("images", total=len(files))
        for item in annotator.run_with_images(files):
            if isinstance(item, ImageFailure):
                failures.append(item)
                progress.console.print(styled("skipped", "red", f"{item.path}: {item.reason}"),
                                       highlight=False, soft_wrap=True)
            else:
                result, image = item
                done.append(result)
                if out is not None:
                    write_overlay(overlay_path(out, name_of[result.path]), image, result, kps,
                                  kpt_thresh=kpt_thresh, radius=radius, thickness=thickness,
                                  show_boxes=show_boxes, show_scores=show_scores)
                if heatmaps:
                    target = overlay_path(out, name_of[result.path])
                    write_heatmap_grids(target.parent, target.stem, image, annotator.estimator,
                                        result.boxes)
            progress.advance(task)
            if stop.is_set():
                break
    seconds = time.perf_counter() - start

    if json_out is not None:
        write_pose_results(json_out, done)
    if coco is not None:
        write_coco_dataset(coco, done, kps, kpt_thresh, [name_of[r.path] for r in done])
    if json_out is None and coco is None and out is None:
        _per_image_table(done, name_of)
    _summary(done, failures, seconds, [p for p in (json_out, coco, out) if p is not None],
             annotator.estimator.model.whole_image)
    if stop.is_set():
        say("interrupted", "yellow", f"({signal.Signals(stop.signum).name}) after "
            f"{len(done) + len(failures)} of {len(files)} images; the outputs hold the "
            f"{len(done)} done")
        raise typer.Exit(stop.exit_code)
    if failures:
        raise typer.Exit(1)


def _per_image_table(done: list[ImagePoses], name_of: dict[str, str]) -> None:
    table = Table(title="Poses per image (write them with --json, --coco or --out)")
    for col in ("image", "id", "size", "boxes", "poses", "secondary", "best score"):
        table.add_column(col, justify="left" if col == "image" else "right")
    for r in done:
        best = max((p.score for p in r.poses), default=None)
        table.add_row(name_of[r.path], str(r.image_id), f"{r.width}×{r.height}",
                      str(len(r.boxes)), str(len(r.poses)),
                      str(sum(p.instance > 0 for p in r.poses)),
                      "-" if best is None else f"{best:.3f}")
    console.print(table)


def _summary(done: list[ImagePoses], failures: list[ImageFailure], seconds: float,
             written: list[Path], whole_image: bool) -> None:
    poses = [p for r in done for p in r.poses]
    table = Table(title="mipnet predict", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rate = len(done) / seconds if seconds > 0 else 0.0
    rows = [
        ("images", str(len(done))),
        ("people (boxes)", "- (whole images, no detector)" if whole_image
         else str(sum(len(r.boxes) for r in done))),
        ("poses", str(len(poses))),
        ("  of which secondary instances", str(sum(p.instance > 0 for p in poses))),
        ("failures", Text(str(len(failures)), style="red" if failures else "")),
        ("time", f"{seconds:.1f} s ({rate:.2f} img/s)"),
    ]
    rows += [("written", str(p)) for p in written]
    for row in rows:
        table.add_row(*row)
    console.print(table)
