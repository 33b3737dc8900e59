"""The video pipeline: every stage one after another against `annotate_video`'s threads."""

from __future__ import annotations

import contextlib
import itertools
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torchvision

from ..annotate.video import annotate_video
from ..checkpoints.zoo import shipped_detector
from ..core.errors import MipnetError
from ..detect.boxes import load_gt_boxes
from ..detect.registry import open_detector
from ..detect.sources import TableBoxes
from ..detect.torchvision_detectors import PersonDetector, weights_cached
from ..media.render import draw_poses
from ..media.video import VideoOptions
from ..models import build_model
from ..pose.engine import CropPoses, EngineOptions, PoseEstimator
from ..synth import VideoConfig, generate_video
from .common import CPU_DETECTOR, Progress
from .timing import Clock, _median, peak_rss_window


@dataclass
class PipelineSettings:
    """The end-to-end video measurement."""

    arch: str = "hrnet_w32"
    frames: int = 12
    width: int = 640
    height: int = 360
    people: int = 4
    fps: float = 25.0
    seed: int = 0
    detector: str | None = CPU_DETECTOR  # None: no detector (ground-truth boxes only)
    detector_weights: str | None = "auto"  # a file, a torchvision tag, "auto", "none"/None (random)
    boxes: str = "auto"  # "gt", "detector" or "auto" (detector when it has trained weights)
    detector_autocast: bool = True  # run the detector under fp16 autocast on CUDA
    flip: bool = True
    half: bool = False  # half-precision pose network (fp16 on CUDA, bf16 on a CPU)
    batch_size: int = 64  # crops per network call
    batch_frames: int = 4  # frames per network batch (as `mipnet video`)
    repeats: int = 1
    video: str | None = None  # an existing video (with its .json ground truth for gt boxes)
    synth_workers: int = 1  # processes rendering the synthetic video (run from a script file)

    def validate(self) -> None:
        problems = []
        if self.frames < 1 or self.people < 0 or self.repeats < 1 or self.batch_frames < 1:
            problems.append("frames, repeats and batch frames must be at least 1, people >= 0")
        if self.boxes not in ("gt", "detector", "auto"):
            problems.append("boxes must be gt, detector or auto")
        if self.boxes == "detector" and self.detector is None:
            problems.append("boxes from the detector need a detector")
        if problems:
            raise MipnetError("; ".join(problems))


STAGES = ("decode", "detect", "crop", "pose", "keypoints", "merge", "render", "encode")
WORKERS = {"reader": ("decode",), "model": ("detect", "crop", "pose", "keypoints", "merge"),
           "writer": ("render", "encode")}


class _StageTimer:
    """Accumulates wall time per stage; synchronises CUDA at the end of each stage."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.clock.sync()
        self.seconds[name] += time.perf_counter() - t0


class _DetectorThenTable:
    """A box source that runs the detector on every frame (for its cost) but hands on the
    ground-truth boxes: the pose stages then see the video's people even when the detector
    has random weights (which find nobody) or misses rendered people."""

    source = "gt"

    def __init__(self, detector: Any, table: dict[int, list], autocast: bool) -> None:
        self.detector, self.table, self.autocast = detector, table, autocast

    def boxes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[list]:
        with _maybe_autocast(self.detector.device, self.autocast):
            self.detector.detect(images)
        return [list(self.table.get(i, [])) for i in image_ids]


class _AutocastDetector:
    """A box source running a detector (under fp16 autocast on CUDA when asked)."""

    source = "detector"

    def __init__(self, detector: Any, autocast: bool) -> None:
        self.detector, self.autocast = detector, autocast

    def boxes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[list]:
        with _maybe_autocast(self.detector.device, self.autocast):
            return self.detector.detect(images)


def _maybe_autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _resolve_detector_weights(name: str, weights: str | None) -> tuple[str | None, str | None]:
    """(weights_path, torchvision tag) for `weights`: a file, a tag, None or "none" (random
    init) or "auto": the shipped file when the zoo ships one for this builder, else the
    DEFAULT tag when torchvision's file is cached (nothing is downloaded), else random init."""
    if weights is None or weights == "none":
        return None, None
    if weights != "auto":
        return (weights, None) if Path(weights).is_file() else (None, weights)
    shipped = shipped_detector(name)
    if shipped is not None:
        return str(shipped.shipped_path), None
    if name in torchvision.models.list_models(module=torchvision.models.detection) and \
            weights_cached(name):
        return None, "DEFAULT"
    return None, None


def make_synthetic_video(path: Path, settings: PipelineSettings, frames: int | None = None
                         ) -> Path:
    """A walking-crowd video from `mipnet_cli.synth` (ground truth beside it, .json)."""
    config = VideoConfig(frames=frames or settings.frames, fps=settings.fps,
                         width=settings.width, height=settings.height,
                         min_people=settings.people, max_people=settings.people,
                         seed=settings.seed, audio=False, distractors=0.0)
    generate_video(path, config, workers=settings.synth_workers)
    return path


def _box_source(settings: PipelineSettings, video: Path, device: torch.device
                ) -> tuple[Any, dict[str, Any]]:
    """The box source the pipeline uses, and a description of it."""
    gt_path = video.with_suffix(".json")
    table = load_gt_boxes(gt_path) if gt_path.is_file() else None
    if settings.detector is None:
        if table is None:
            raise MipnetError(f"{gt_path}: ground-truth boxes needed without a detector")
        return TableBoxes(table, "gt"), {"detector": None, "boxes": "gt"}
    path, tag = _resolve_detector_weights(settings.detector, settings.detector_weights)
    trained = path is not None or tag is not None
    detector = (open_detector(settings.detector, path, device=device) if path is not None
                else PersonDetector(settings.detector, weights=tag, device=device,
                                    progress=False))
    use_gt = settings.boxes == "gt" or (settings.boxes == "auto" and not trained)
    if use_gt and table is None:
        raise MipnetError(f"{gt_path}: ground-truth boxes needed (the detector has "
                          f"{'trained' if trained else 'random'} weights)")
    autocast = settings.detector_autocast and device.type == "cuda"
    weights_desc = Path(path).name if path is not None else (tag or "random init")
    desc = {"detector": settings.detector, "detector_weights": weights_desc,
            "detector_autocast_fp16": autocast, "boxes": "gt" if use_gt else "detector"}
    if use_gt:
        return _DetectorThenTable(detector, table, autocast), desc
    return _AutocastDetector(detector, autocast), desc


def run_sequential(video: Path, estimator: PoseEstimator, box_source: Any, out: Path,
                batch_frames: int, clock: Clock, max_frames: int | None = None
                ) -> tuple[dict[str, float], int, int]:
    """Every stage one after another on batches of frames (the first `max_frames` only if
    given): seconds per stage, frames, boxes."""
    timer = _StageTimer(clock)
    frames_done = boxes_seen = 0
    h, w = estimator.input_size
    with av.open(str(video)) as src, av.open(str(out), mode="w") as dst:
        stream = dst.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                rate=src.streams.video[0].average_rate)
        stream.width = src.streams.video[0].codec_context.width // 2 * 2
        stream.height = src.streams.video[0].codec_context.height // 2 * 2
        stream.pix_fmt = "yuv420p"
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast"}
        decoded = src.decode(video=0)
        total = max_frames if max_frames is not None else math.inf
        while frames_done < total:
            take = int(min(batch_frames, total - frames_done))
            with timer.stage("decode"):
                batch = [f.to_ndarray(format="rgb24") for f in itertools.islice(decoded, take)]
            if not batch:
                break
            ids = list(range(frames_done + 1, frames_done + 1 + len(batch)))
            with timer.stage("detect"):
                boxes = box_source.boxes(batch, ids)
            flat = [b for per in boxes for b in per]
            index = np.repeat(np.arange(len(batch)), [len(b) for b in boxes])
            poses: list[list] = [[] for _ in batch]
            if flat:
                centers, scales = estimator.boxes_to_center_scale(
                    np.array([b.xywh for b in flat], np.float64))
                kps = []
                for s in range(0, len(flat), estimator.options.batch_size):
                    sl = slice(s, s + estimator.options.batch_size)
                    with timer.stage("crop"):
                        crops = estimator.crops(batch, centers[sl], scales[sl], index[sl])
                    with timer.stage("pose"):
                        hm = estimator.infer(crops)
                    with timer.stage("keypoints"):
                        kps.append(estimator.candidates(hm, centers[sl], scales[sl]))
                with timer.stage("merge"):
                    crop_poses = CropPoses.join(kps, centers, scales,
                                                estimator.keypoint_set.num_joints,
                                                estimator.num_instances)
                    start = 0
                    for i, per in enumerate(boxes):
                        rows = np.arange(start, start + len(per))
                        poses[i] = estimator.merge(crop_poses, flat, rows)
                        start += len(per)
            for rgb, frame_poses, frame_boxes in zip(batch, poses, boxes, strict=True):
                with timer.stage("render"):
                    drawn = draw_poses(rgb, frame_poses, estimator.keypoint_set,
                                       boxes=frame_boxes) if frame_poses else rgb
                with timer.stage("encode"):
                    vf = av.VideoFrame.from_ndarray(
                        np.ascontiguousarray(drawn[:stream.height, :stream.width]),
                        format="rgb24")
                    vf.pts = frames_done
                    dst.mux(stream.encode(vf))
                frames_done += 1
            boxes_seen += len(flat)
        with timer.stage("encode"):
            dst.mux(stream.encode(None))
    return timer.seconds, frames_done, boxes_seen


def _pipelined(video: Path, estimator: PoseEstimator, box_source: Any, out: Path,
               batch_frames: int, clock: Clock, max_frames: int | None = None
               ) -> tuple[float, int, dict[str, Any]]:
    """`annotate_video` on the video (its first `max_frames`): seconds, frames, peak memory."""
    device = estimator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with peak_rss_window() as mem:
        clock.sync()
        t0 = time.perf_counter()
        summary = annotate_video(video, estimator, box_source,
                                 VideoOptions(batch_frames=batch_frames,
                                              max_frames=max_frames), out=out)
        clock.sync()
        seconds = time.perf_counter() - t0
    if summary.error:
        raise MipnetError(f"{video}: {summary.error}")
    if device.type == "cuda":
        mem["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return seconds, summary.frames, mem


def build_estimator(settings: PipelineSettings, device: torch.device) -> PoseEstimator:
    """The pose estimator the pipeline runs: `arch` with 2 instances, random weights."""
    model = build_model(settings.arch, num_instances=2)
    options = EngineOptions(flip_test=settings.flip, half=settings.half,
                            batch_size=settings.batch_size)
    return PoseEstimator(model, "coco", options, device)


def run_pipeline(settings: PipelineSettings, device: torch.device,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Stages alone (one after another) and pipelined (`annotate_video`), alternated
    `repeats` times on the same video; medians."""
    settings.validate()
    clock = Clock(device)
    with tempfile.TemporaryDirectory(prefix="mipnet-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        if settings.video is not None:
            video = Path(settings.video)
        else:
            if progress:
                progress("writing the synthetic video")
            video = make_synthetic_video(tmp / "crowd.mp4", settings)
        size = video_size(video)
        estimator = build_estimator(settings, device)
        box_source, boxes_desc = _box_source(settings, video, device)
        # Warm-up: the first frame through every stage (allocations, cuDNN autotuning).
        run_sequential(video, estimator, box_source, tmp / "warmup.mp4", settings.batch_frames,
                    clock, max_frames=1)
        stage_runs, pipe_runs, mems = [], [], []
        frames = boxes = 0
        for r in range(settings.repeats):
            seconds, frames, boxes = run_sequential(video, estimator, box_source, tmp / "seq.mp4",
                                                 settings.batch_frames, clock)
            stage_runs.append(seconds)
            if progress:
                progress(f"stages alone {r + 1}/{settings.repeats}")
            wall, piped_frames, mem = _pipelined(video, estimator, box_source,
                                                 tmp / "pipe.mp4", settings.batch_frames, clock)
            if piped_frames != frames:
                raise MipnetError(f"the pipeline read {piped_frames} frames, the stages "
                                  f"{frames}")
            pipe_runs.append(wall)
            mems.append(mem)
            if progress:
                progress(f"pipelined {r + 1}/{settings.repeats}")
    if frames == 0:
        raise MipnetError(f"{video}: no frames")
    stage_ms = {s: 1e3 * _median([run[s] for run in stage_runs]) / frames for s in STAGES}
    worker_ms = {w: sum(stage_ms[s] for s in ss) for w, ss in WORKERS.items()}
    slowest = max(worker_ms, key=worker_ms.__getitem__)
    bound_fps = 1e3 / worker_ms[slowest]
    pipe_fps = frames / _median(pipe_runs)
    return {
        "settings": asdict(settings),
        "video": {"frames": frames, "size": size, "synthetic": settings.video is None,
                  "boxes_per_frame": boxes / frames},
        "boxes": boxes_desc,
        "stage_ms_per_frame": stage_ms,
        "worker_ms_per_frame": worker_ms,
        "slowest_worker": slowest,
        "slowest_stage": max(stage_ms, key=stage_ms.__getitem__),
        "sequential_fps": 1e3 / sum(stage_ms.values()),
        "bound_fps": bound_fps,
        "pipelined_fps": pipe_fps,
        "pipelined_over_bound": pipe_fps / bound_fps,
        "pipelined_runs_s": pipe_runs,
        "memory": {
            "peak_rss_mib": max(float(m["peak_rss_mib"]) for m in mems),
            "rss_scope": mems[0]["rss_scope"],
            **({"cuda_peak_allocated_mib": max(float(m["cuda_peak_allocated_mib"])
                                               for m in mems)} if device.type == "cuda" else {}),
        },
    }


def video_size(video: Path) -> list[int]:
    """[width, height] of a video's first stream."""
    with av.open(str(video)) as c:
        cc = c.streams.video[0].codec_context
        return [cc.width, cc.height]
