"""`mipnet synth`: write a synthetic occluded-crowd dataset (images or videos)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..core.errors import MipnetError
from ..synth import (
    ANNOTATION_FILE,
    IMAGE_DIR,
    SynthConfig,
    SynthStats,
    VideoConfig,
    generate_dataset,
    generate_video,
    video_codec,
)
from .app import TRAIN, app, console, say


def _stats_table(title: str, stats: SynthStats, unit: str) -> Table:
    table = Table(title=title, show_header=False)
    s = stats.summary()
    rows = [
        (unit, str(s["images"])),
        ("people", f"{s['people']} ({s['people_per_image']:.2f} per {unit[:-1]}, "
                   f"max {s['max_people_per_image']})"),
        ("people with box IoU > 0.5 with another", f"{100 * s['crowded_fraction']:.1f} %"),
        ("mean max IoU", f"{s['mean_max_iou']:.3f}"),
        ("crowd index (CrowdPose)", f"{s['crowd_index']:.3f}"),
        ("occluded keypoints (v=1 of v>0)", f"{100 * s['occluded_keypoint_fraction']:.1f} %"),
        ("keypoints outside the image (v=0)", f"{100 * s['outside_keypoint_fraction']:.1f} %"),
        ("time", f"{stats.seconds:.1f} s ({stats.images_per_second:.1f} {unit}/s)"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table


@app.command(rich_help_panel=TRAIN)
def synth(
    out: Path = typer.Argument(..., help="output folder"),
    num_images: int = typer.Option(100, "--num-images", "-n", help="images to write"),
    seed: int = typer.Option(0, help="same seed, same bytes"),
    width: int = typer.Option(640, help="image width (ignored with --layouts)"),
    height: int = typer.Option(480, help="image height (ignored with --layouts)"),
    min_people: int = typer.Option(2, help="fewest people per image"),
    max_people: int = typer.Option(6, help="most people per image"),
    overlap: float = typer.Option(
        0.5, help="target fraction of people whose box IoU with another exceeds 0.5 "
                  "(OCHuman: 0.68)"),
    min_scale: float = typer.Option(0.35, help="smallest body height / image height"),
    max_scale: float = typer.Option(0.9, help="largest body height / image height"),
    distractors: float = typer.Option(0.6, help="mean number of shapes in front of people"),
    min_visible: float = typer.Option(
        0.1, help="people with less of their body visible are not annotated"),
    layouts: Path | None = typer.Option(
        None, help="COCO or CrowdPose keypoint file: re-enact its people's boxes and poses"),
    max_size: int = typer.Option(800, help="cap on the longer side of layout-sized images"),
    real_people: list[Path] = typer.Option(
        [], help="paste real people cut out of this COCO-format keypoint file (with "
                 "segmentation masks); repeatable, one --real-images folder each"),
    real_images: list[Path] = typer.Option([], help="the image folder of each --real-people"),
    person_split: str = typer.Option("train", help="train or val: which people of "
                                                   "--real-people (split by source person)"),
    val_fraction: float = typer.Option(0.2, min=0.0, max=0.95,
                                       help="share of the source people in the val split"),
    backgrounds: Path | None = typer.Option(
        None, help="folder of real photos without people, used as half the backgrounds"),
    image_format: str = typer.Option("jpg", "--format", help="jpg or png"),
    workers: int = typer.Option(0, help="processes (0: one per CPU core)"),
    video: bool = typer.Option(False, "--video", help="write walking-crowd MP4 clips instead"),
    num_videos: int = typer.Option(1, help="clips to write with --video"),
    frames: int = typer.Option(48, help="frames per clip"),
    fps: float = typer.Option(12.0, help="frames per second"),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="add an AAC audio track"),
) -> None:
    """Generate rendered people in occluded crowds with exact COCO-17 ground truth.

    Images: OUT/images/*.jpg and OUT/annotations.json. Videos (--video): OUT/clip_NNN.mp4,
    each with OUT/clip_NNN.json (one image entry per frame, track_id per person). With
    --real-people, the people are real ones cut out of annotated photos by their masks.
    """
    if video and real_people:
        raise MipnetError("--real-people makes images, not videos: leave out --video")
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    if video:
        total = SynthStats()
        for clip in range(num_videos):
            config = VideoConfig(frames=frames, fps=fps, width=width, height=height,
                                 min_people=min_people, max_people=max_people,
                                 overlap=overlap, seed=seed,
                                 clip=clip, audio=audio, min_visible=min_visible)
            path = out / f"clip_{clip:03d}.mp4"
            with Progress(*columns, console=console, transient=True) as bar:
                task = bar.add_task(f"{path.name}", total=frames)
                stats = generate_video(
                    path, config, workers=n_workers,
                    progress=lambda d, t, bar=bar, task=task: bar.update(task, completed=d))
            say("wrote", "green", f"{path} and {path.with_suffix('.json').name} "
                f"({frames} frames at {fps:g} fps, {video_codec()}"
                f"{', AAC audio' if audio else ''})", stderr=False)
            total.merge(stats)
        console.print(_stats_table("synthetic videos", total, "frames"))
        return
    config = SynthConfig(
        num_images=num_images, seed=seed, width=width, height=height, min_people=min_people,
        max_people=max_people, overlap=overlap, scale_range=(min_scale, max_scale),
        distractors=distractors, min_visible=min_visible,
        layouts=str(layouts) if layouts else None, max_size=max_size, image_format=image_format,
        real_people=tuple(map(str, real_people)), real_images=tuple(map(str, real_images)),
        person_split=person_split, val_fraction=val_fraction,
        backgrounds=str(backgrounds) if backgrounds else None)
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("rendering", total=num_images)
        stats = generate_dataset(out, config, workers=min(n_workers, num_images),
                                 progress=lambda d, t: bar.update(task, completed=d))
    say("wrote", "green", f"{out / IMAGE_DIR}/ and {out / ANNOTATION_FILE}", stderr=False)
    console.print(_stats_table("synthetic dataset", stats, "images"))
