"""Pose videos: PyAV decode -> batched boxes and poses -> overlays -> H.264 encode, pipelined.

Three threads overlap: a reader decodes frames (and demuxes the audio packets) into a bounded
queue (`media.video.FrameReader`), the calling thread runs the detector and the pose network on
several frames at once, and a writer (`media.video.VideoWriter`) draws the skeletons, encodes
the video and remuxes the audio packets untouched. The output keeps the source's frame rate and
every frame's timestamp (shifted to start at 0 with `start`); with `stride` the network runs on
every stride-th frame and the frames between show the latest poses. Per-frame results stream to
a JSON Lines file (flushed each frame); a COCO dataset is assembled at the end from a temporary
JSONL file, so memory stays flat.

Ctrl-C (SIGINT) finishes the frames being processed and closes every file valid; a truncated
or damaged input ends the run the same way, with the reason in `VideoSummary.error`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import av

from ..core.errors import MipnetError
from ..core.files import atomic_path, check_outputs, json_line
from ..core.results import Box, ImagePoses, Pose, person_boxes
from ..core.signals import StopRequest, signal_of, stop_requests
from ..detect.sources import BoxSource, TableBoxes, box_source
from ..media.video import (
    CONTAINERS,
    End,
    Frame,
    FrameReader,
    VideoOptions,
    VideoSource,
    VideoWriter,
    WriterFailed,
    error_reason,
    malloc_trim,
)
from ..media.writers import CocoStream, frame_record
from ..pose.engine import PoseEstimator
from ..pose.tracking import PoseTracker

MAX_PENDING = 64  # frames and packets held for one network batch (bounds memory with --stride)


TRIM_EVERY = 100  # frames between returns of freed heap memory to the system (glibc)


@dataclass
class VideoSummary:
    """How a run went. `error` is set when the input ended early (truncated or damaged)."""

    frames: int = 0  # frames read from the range (and written to the output video)
    processed: int = 0  # frames the pose network ran on
    poses: int = 0
    tracks: int = 0
    seconds: float = 0.0
    encoder: str | None = None
    audio_streams: int = 0
    audio_packets: int = 0
    interrupted: bool = False
    stop_signal: int = signal.SIGINT  # the signal that interrupted the run
    error: str | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.error is None

    def end_record(self) -> dict[str, Any]:
        """The last line of the JSON Lines output: its absence means the run was killed."""
        return {"end": {"frames": self.frames, "processed": self.processed,
                        "complete": self.complete, "interrupted": self.interrupted,
                        "error": self.error}}


def video_box_source(
    *,
    boxes: str | os.PathLike | None = None,
    gt: str | os.PathLike | None = None,
    detector: str | None = None,
    detector_weights: str | os.PathLike | None = None,
    det_thresh: float | None = None,
    det_nms: float = 0.5,
    det_sizes: Sequence[int] | None = None,
    device: str | None = None,
    whole_image: bool = False,
) -> BoxSource:
    """Person boxes by image id, from exactly one source (see `detect.sources.box_source`): a COCO
    detection file, the boxes of a COCO annotation file, or a detector (torchvision's COCO
    Faster R-CNN, offline the shipped YOLOX-Nano). In a video, the image id is the 1-based frame
    number (frame index + 1, as `mipnet synth --video` writes it)."""
    if sum(x is not None for x in (boxes, gt)) + (
            detector is not None or detector_weights is not None) > 1:
        raise MipnetError("give one box source: --boxes, --gt or a detector")
    return box_source(boxes=boxes, gt=gt, detector=detector, detector_weights=detector_weights,
                      det_thresh=det_thresh, det_nms=det_nms, det_sizes=det_sizes,
                      device=device, whole_image=whole_image)


def annotate_video(
    source: str | os.PathLike,
    estimator: PoseEstimator,
    box_source: BoxSource,
    options: VideoOptions | None = None,
    *,
    out: str | os.PathLike | None = None,
    jsonl: str | os.PathLike | None = None,
    coco: str | os.PathLike | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> VideoSummary:
    """Estimate the poses in a video; write any of an annotated video (`out`: .mp4, .m4v, .mov
    or .mkv), per-frame JSON Lines (`jsonl`) and a COCO dataset (`coco`).

    Boxes are looked up by image id = frame index + 1. `progress(frames_read, expected)` is
    called after each frame is handed on. The run stops early on Ctrl-C (`interrupted`) or at
    a damaged part of the input (`error`); the outputs then hold the frames done so far and
    are valid.
    """
    options = options or VideoOptions()
    options.validate()
    if options.kpt_thresh is None:
        options = replace(options, kpt_thresh=estimator.kpt_thresh)
    src_path = Path(source)
    if out is not None and Path(out).suffix.lower() not in CONTAINERS:
        raise MipnetError(f"{out}: the output video must end in "
                          f"{', '.join(sorted(CONTAINERS))}")
    check_outputs({"out": out, "jsonl": jsonl, "coco": coco}, inputs=[src_path])
    tracker = (PoseTracker(estimator.keypoint_set, kpt_thresh=options.kpt_thresh,
                           smooth=options.smooth, cutoff=options.smooth_cutoff,
                           beta=options.smooth_beta) if options.track else None)
    src = VideoSource(src_path)
    with contextlib.ExitStack() as stack:
        stack.callback(src.container.close)
        if src.duration is not None and options.start >= src.duration:
            raise MipnetError(f"--start {options.start:g} s is past the end of {src_path} "
                              f"({src.duration:.2f} s)")
        summary = VideoSummary(audio_streams=len(src.audio))
        expected = src.expected_frames(options)
        stop_flag = StopRequest()
        start = time.perf_counter()
        writer: VideoWriter | None = None
        if out is not None:
            # Interruptions and damaged input end the body normally: the partial video is kept.
            tmp = stack.enter_context(atomic_path(Path(out)))
            writer = VideoWriter(tmp, src, options, estimator.keypoint_set, summary.notices)
            summary.encoder = writer.encoder
        jsonl_file = None
        if jsonl is not None:
            Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
            jsonl_file = stack.enter_context(open(jsonl, "w", encoding="utf-8"))
        spool = None
        if coco is not None:
            info = {"description": "poses predicted by mipnet (MIPNet multi-instance pose "
                                   "estimation)", "video": src_path.name,
                    "fps": float(src.fps)}
            spool = CocoStream(Path(coco), estimator.keypoint_set, src_path.name, info,
                                options.kpt_thresh)
            stack.callback(spool.close)
        reader = FrameReader(src, options, set(writer.audio) if writer is not None else set())
        run = _Run(estimator, box_source, tracker, writer, jsonl_file, spool, summary, src,
                   options, progress, expected)
        if writer is not None:
            writer.start()
        reader.start()
        try:
            with stop_requests(stop_flag):
                run.loop(reader, stop_flag)
        except KeyboardInterrupt as exc:
            summary.interrupted, summary.stop_signal = True, signal_of(exc)
        except WriterFailed:
            pass  # raised below, once every thread has ended
        finally:
            reader.stop.set()
            reader.join()
            if writer is not None:
                with contextlib.suppress(BaseException):
                    writer.queue.put(None)  # ends the writer (it drains on error)
                writer.join()
        if stop_flag.is_set() and not summary.interrupted:
            summary.interrupted, summary.stop_signal = True, stop_flag.signum
        if writer is not None and writer.error is not None:
            reason = error_reason(writer.error)
            summary.error = summary.error or f"cannot encode the video ({reason})"
        if jsonl_file is not None:
            jsonl_file.write(json.dumps(summary.end_record()) + "\n")
        if writer is not None:
            if writer.error is not None:
                raise MipnetError(f"{out}: cannot encode the video "
                                  f"({error_reason(writer.error)})") from writer.error
            summary.audio_packets = writer.packets
        if spool is not None:
            spool.write()
    if isinstance(box_source, TableBoxes):
        # Outputs are complete and valid either way; no matching frame at all is an error.
        summary.notices.append(box_source.check_matches(run.frame_ids, "frames"))
    summary.tracks = tracker.next_id - 1 if tracker is not None else 0
    summary.seconds = time.perf_counter() - start
    return summary


class _Run:
    """The consumer side: batches frames through the network and hands them to the writers."""

    def __init__(self, estimator: PoseEstimator, box_source: BoxSource,
                 tracker: PoseTracker | None, writer: VideoWriter | None,
                 jsonl_file: IO[str] | None, spool: CocoStream | None,
                 summary: VideoSummary, src: VideoSource,
                 options: VideoOptions, progress: Callable[[int, int | None], None] | None,
                 expected: int | None) -> None:
        self.estimator, self.box_source, self.tracker = estimator, box_source, tracker
        self.writer, self.jsonl_file, self.spool = writer, jsonl_file, spool
        self.summary, self.src, self.options = summary, src, options
        self.progress, self.expected = progress, expected
        self.pending: list[Frame | av.Packet] = []
        self.frame_ids: list[int] = []  # image ids of the frames the network ran on
        self.latest: tuple[list[Pose], list[Box]] = ([], [])
        self.trim = malloc_trim()

    def loop(self, reader: FrameReader, stop_flag: StopRequest) -> None:
        to_infer = 0
        while not stop_flag.is_set():
            item = reader.queue.get()
            if isinstance(item, End):
                self.summary.error = item.error
                break
            self.pending.append(item)
            if isinstance(item, Frame) and item.infer:
                to_infer += 1
            if to_infer == self.options.batch_frames or len(self.pending) >= MAX_PENDING:
                self.flush()
                to_infer = 0
        self.flush()

    def flush(self) -> None:
        """Run the network on the pending frames to infer, then pass everything on in order."""
        frames = [f for f in self.pending if isinstance(f, Frame) and f.infer]
        if frames:
            images = [f.rgb for f in frames]
            boxes = self.box_source.boxes(images, [f.index + 1 for f in frames])
            poses = self.estimator.predict(images, boxes)
            shown = [person_boxes(b) for b in boxes]
            results = dict(zip((id(f) for f in frames), zip(poses, shown, strict=True),
                               strict=True))
        for item in self.pending:
            if isinstance(item, Frame):
                if item.infer:
                    frame_poses, frame_boxes = results[id(item)]
                    self._record(item, frame_poses, frame_boxes)
                    self.latest = (frame_poses, frame_boxes)
                if self.writer is not None:
                    self.writer.send((item, *self.latest))
                self.summary.frames += 1
                if self.trim is not None and self.summary.frames % TRIM_EVERY == 0:
                    self.trim()
                if self.progress is not None:
                    self.progress(self.summary.frames, self.expected)
            elif self.writer is not None:
                self.writer.send(item)
        self.pending.clear()

    def _record(self, frame: Frame, poses: list[Pose], boxes: list[Box]) -> None:
        if self.tracker is not None:
            self.tracker.update(poses, frame.time)
        self.summary.processed += 1
        self.summary.poses += len(poses)
        self.frame_ids.append(frame.index + 1)
        result = ImagePoses(path=str(self.src.path), width=self.src.width,
                            height=self.src.height, image_id=frame.index + 1, boxes=boxes,
                            poses=poses, frame_index=frame.index,
                            timestamp=round(frame.time, 6))
        if self.jsonl_file is not None:
            self.jsonl_file.write(json_line(frame_record(result), where=self.jsonl_file.name)
                                  + "\n")
            self.jsonl_file.flush()
        if self.spool is not None:
            self.spool.add(result)
