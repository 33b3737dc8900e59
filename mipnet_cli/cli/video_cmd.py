"""`mipnet video`: poses in a video, written as an annotated video, JSON Lines and COCO."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..annotate.images import load_estimator
from ..annotate.video import VideoSummary, annotate_video, video_box_source
from ..core.files import check_outputs
from ..media.video import VideoOptions
from ..pose.engine import EngineOptions
from . import options as opt
from .app import ANNOTATE, RateColumn, app, console, err_console, say

EXAMPLES = """
Examples:

  mipnet video clip.mp4 --out annotated.mp4 --json poses.jsonl

  mipnet video street.avi --out tracked.mp4 --track --smooth --start 10 --end 20

  mipnet video clip.mp4 --coco dataset.json --stride 5      (every 5th frame, for CVAT)

  mipnet video synth.mp4 --gt synth.json --out check.mp4    (ground-truth boxes)
"""


@app.command(epilog=EXAMPLES, rich_help_panel=ANNOTATE)
def video(
    source: Path = typer.Argument(..., help="input video (any format FFmpeg reads)"),
    out: Path | None = typer.Option(
        None, help="annotated video (.mp4, .m4v, .mov or .mkv): H.264 yuv420p, same frame rate "
                   "and timestamps, audio copied"),
    json_out: Path | None = typer.Option(
        None, "--json", help="JSON Lines: one line per processed frame, flushed as it goes"),
    coco: Path | None = typer.Option(
        None, help="COCO person-keypoints dataset, one image per processed frame"),
    weights: opt.Weights = None,
    detector: opt.Detector = None,
    detector_weights: opt.DetectorWeights = None,
    det_thresh: opt.DetThresh = None,
    det_nms: opt.DetNms = 0.5,
    det_size: opt.DetSize = None,
    boxes: Path | None = typer.Option(
        None, help="COCO detection results whose image_id is the frame number (index + 1)"),
    gt: Path | None = typer.Option(
        None, help="COCO annotation file whose image ids are frame numbers (index + 1), e.g. "
                   "from `mipnet synth --video`: its person boxes"),
    stride: int = typer.Option(
        1, min=1, help="run the network on every N-th frame (the others show the latest poses)"),
    start: float = typer.Option(0.0, min=0.0, help="start time in seconds"),
    end: float | None = typer.Option(None, min=0.0, help="end time in seconds (exclusive)"),
    max_frames: int | None = typer.Option(None, min=1, help="stop after this many frames"),
    batch_frames: int = typer.Option(4, min=1, help="frames per pose-network batch"),
    track: bool = typer.Option(False, help="stable person ids across frames (drawn as colours)"),
    smooth: bool = typer.Option(False, help="One-Euro smoothing of tracked keypoints"),
    smooth_cutoff: float = typer.Option(1.0, min=0.001, help="One-Euro minimum cutoff (Hz)"),
    smooth_beta: float = typer.Option(0.05, min=0.0, help="One-Euro speed coefficient"),
    instances: opt.Instances = None,
    flip: opt.Flip = True,
    crop_batch: opt.CropBatch = 64,
    device: opt.Device = "auto",
    half: opt.Half = False,
    rescore: opt.Rescore = "keypoints",
    scorer: opt.Scorer = None,
    input_size: opt.InputSize = None,
    max_people: opt.MaxPeople = None,
    recover: opt.Recover = None,
    recover_weights: opt.RecoverWeights = None,
    kpt_thresh: opt.KptThresh = None,
    show_boxes: opt.ShowBoxes = False,
    show_scores: opt.ShowScores = False,
    crf: int = typer.Option(20, min=0, max=51, help="H.264 quality (lower is better)"),
) -> None:
    """Estimate every person's pose in each frame of a video, occluded people included.

    Ctrl-C or SIGTERM stops after the current frames and leaves every output valid (exit code
    130 or 143; the JSON Lines end with an "end" record unless the run was killed); a
    truncated or damaged video ends with a message and what was written so far (exit code 1).
    """
    options = VideoOptions(stride=stride, start=start, end=end, max_frames=max_frames,
                           batch_frames=batch_frames, track=track, smooth=smooth,
                           smooth_cutoff=smooth_cutoff, smooth_beta=smooth_beta,
                           kpt_thresh=kpt_thresh, show_boxes=show_boxes,
                           show_scores=show_scores, crf=crf)
    options.validate()
    check_outputs({"--out": out, "--json": json_out, "--coco": coco},
                  inputs=[source, *(p for p in (boxes, gt, detector_weights) if p is not None)])
    det_sizes = opt.parse_det_sizes(det_size)
    if smooth and not track:
        say("note:", "yellow", "--smooth works on tracked people: tracking is on")
        options.track = True
    engine = EngineOptions(flip_test=flip, instances=instances, batch_size=crop_batch, half=half,
                           rescore=rescore, input_size=input_size, max_people=max_people)
    estimator = load_estimator(weights, engine, device, scorer=scorer, recover=recover,
                               recover_weights=recover_weights)
    box_source = video_box_source(boxes=boxes, gt=gt, detector=detector,
                                  detector_weights=detector_weights, det_thresh=det_thresh,
                                  det_nms=det_nms, det_sizes=det_sizes, device=device,
                                  whole_image=estimator.model.whole_image)
    opt.model_notices(weights, box_source, detector)

    columns = (TextColumn("frames"), BarColumn(), MofNCompleteColumn(), RateColumn("fps"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("video", total=None)

        def advance(done: int, expected: int | None) -> None:
            progress.update(task, completed=done, total=expected)

        summary = annotate_video(source, estimator, box_source, options, out=out,
                                 jsonl=json_out, coco=coco, progress=advance)
    for notice in summary.notices:
        say("note:", "yellow", notice)
    _summary(summary, [p for p in (out, json_out, coco) if p is not None])
    if summary.error is not None:
        say("error:", "bold red", f"{source}: {summary.error}; the outputs hold the "
            f"{summary.frames} frames before it")
        raise typer.Exit(1)
    if summary.interrupted:
        say("interrupted", "yellow", f"({signal.Signals(summary.stop_signal).name}) after "
            f"{summary.frames} frames; the outputs are closed and valid")
        raise typer.Exit(128 + summary.stop_signal)


def _summary(s: VideoSummary, written: list[Path]) -> None:
    table = Table(title="mipnet video", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rate = s.frames / s.seconds if s.seconds > 0 else 0.0
    rows = [
        ("frames", str(s.frames)),
        ("  through the pose network", str(s.processed)),
        ("poses", str(s.poses)),
        ("time", f"{s.seconds:.1f} s ({rate:.2f} frames/s)"),
    ]
    if s.tracks:
        rows.append(("tracks", str(s.tracks)))
    if s.encoder is not None:
        rows.append(("encoder", s.encoder))
        rows.append(("audio packets copied", f"{s.audio_packets} ({s.audio_streams} streams)"))
    rows += [("written", str(p)) for p in written]
    for row in rows:
        table.add_row(*row)
    console.print(table)
