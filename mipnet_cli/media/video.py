"""Pose videos: PyAV decode -> batched boxes and poses -> overlays -> H.264 encode, pipelined.

Three threads overlap: a reader decodes frames (and demuxes the audio packets) into a bounded
queue, the calling thread runs the detector and the pose network on several frames at once, and
a writer draws the skeletons, encodes the video and remuxes the audio packets untouched. The
output keeps the source's frame rate and every frame's timestamp (shifted to start at 0 with
`start`); with `stride` the network runs on every stride-th frame and the frames between show
the latest poses. Per-frame results stream to a JSON Lines file (flushed each frame); a COCO
dataset is assembled at the end from a temporary JSONL file, so memory stays flat.

Ctrl-C (SIGINT) finishes the frames being processed and closes every file valid; a truncated
or damaged input ends the run the same way, with the reason in `VideoSummary.error`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import queue
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import numpy as np

from .annotate import BoxSource, TableBoxes, box_source
from .engine import PoseEstimator
from .errors import MipnetError
from .io import atomic_path, check_outputs, json_line, remove_stale_temps, temp_prefix
from .keypoints import KeypointSet
from .render import draw_poses
from .results import Box, ImagePoses, Pose, person_boxes
from .signals import StopRequest, signal_of, stop_requests
from .tracking import PoseTracker
from .writers import coco_dataset, pose_result

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
MAX_PENDING = 64  # frames and packets held for one network batch (bounds memory with --stride)
TRIM_EVERY = 100  # frames between returns of freed heap memory to the system (glibc)


@functools.cache
def _malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), where there is one. Frame-sized buffers freed by the pipeline's
    threads otherwise stay in glibc's per-thread arenas, and the resident memory creeps up
    over the first few hundred frames before it levels off."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter is linked to
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


@dataclass
class VideoOptions:
    """What `mipnet video` does besides estimating poses."""

    stride: int = 1  # run the network on every stride-th frame
    start: float = 0.0  # seconds from the start of the video
    end: float | None = None  # seconds (exclusive)
    max_frames: int | None = None  # frames read from the range
    batch_frames: int = 4  # frames whose boxes go through the pose network together
    queue_frames: int = 8  # decoded frames waiting for the network (and drawn ones for encoding)
    track: bool = False
    smooth: bool = False
    smooth_cutoff: float = 1.0  # One-Euro min cutoff, Hz
    smooth_beta: float = 0.05  # One-Euro speed coefficient, 1/pixel
    kpt_thresh: float | None = None  # joints below are not drawn, labelled nor tracked
    # (None: the network's own, `PoseEstimator.kpt_thresh`)
    radius: int | None = None
    thickness: int | None = None
    show_boxes: bool = False
    show_scores: bool = False
    crf: int = 20  # libx264 quality (lower is better)

    def validate(self) -> None:
        """Raise MipnetError for settings that cannot work."""
        problems = []
        if self.stride < 1 or self.batch_frames < 1 or self.queue_frames < 1:
            problems.append("--stride, --batch-frames and the queue size must be at least 1")
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            problems.append("need 0 <= --start < --end")
        if self.max_frames is not None and self.max_frames < 1:
            problems.append("--max-frames must be at least 1")
        if self.smooth_cutoff <= 0 or self.smooth_beta < 0:
            problems.append("--smooth-cutoff must be positive and --smooth-beta non-negative")
        if not 0 <= self.crf <= 51:
            problems.append("--crf must lie in [0, 51]")
        if problems:
            raise MipnetError("; ".join(problems))


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


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


class _Source:
    """The input container and what the pipeline needs to know about its streams."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise MipnetError(f"{path}: video file not found")
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, OSError) as exc:
            raise MipnetError(f"{path}: cannot read the video ({_reason(exc)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise MipnetError(f"{path}: has no video stream")
        self.path = path
        self.video = self.container.streams.video[0]
        self.audio = list(self.container.streams.audio)
        self.time_base: Fraction = self.video.time_base or Fraction(1, 90000)
        rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        self.fps = Fraction(rate)
        self.origin = int(self.video.start_time or 0)  # pts of the stream's start
        self.width = self.video.codec_context.width
        self.height = self.video.codec_context.height
        self.frames = int(self.video.frames or 0)
        duration = self.video.duration
        self.duration = float(duration * self.time_base) if duration else None

    def expected_frames(self, options: VideoOptions) -> int | None:
        """Frames the run will read, for the progress bar (None when unknown)."""
        total = self.frames or (round(self.duration * self.fps) if self.duration else 0)
        if not total:
            return options.max_frames
        fps = float(self.fps)
        last = min(total, math.ceil(options.end * fps)) if options.end is not None else total
        count = max(0, last - math.ceil(options.start * fps - 1e-6))
        return min(count, options.max_frames) if options.max_frames else count


@dataclass
class _Frame:
    index: int  # position in the source (0-based)
    time: float  # seconds from the stream start
    pts: int  # output pts (source time base)
    rgb: np.ndarray
    infer: bool


@dataclass
class _End:
    error: str | None


class _Stopped(Exception):
    """The consumer asked the reader to stop."""


class _WriterFailed(Exception):
    """The writer thread stopped on an error (kept in `_Writer.error`)."""


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    """Put `item`, giving up (raising _Stopped) once `stop` is set."""
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


class _Reader(threading.Thread):
    """Decodes the frames of the range, and forwards the audio packets that go with them."""

    def __init__(self, src: _Source, options: VideoOptions, audio_out: set[int]) -> None:
        super().__init__(name="mipnet-video-reader", daemon=True)
        self.src, self.options, self.audio_out = src, options, audio_out
        self.queue: queue.Queue = queue.Queue(maxsize=options.queue_frames)
        self.stop = threading.Event()
        self.decoded = 0  # frames decoded from the start (or the seek point)

    def run(self) -> None:
        error = None
        try:
            error = self._demux()
        except _Stopped:
            return
        except av.error.FFmpegError as exc:
            error = (f"the video is damaged or truncated: decoding stopped after "
                     f"{self.decoded} frames ({_reason(exc)})")
        except Exception as exc:  # noqa: BLE001 (reported to the consumer, never lost)
            error = f"{type(exc).__name__}: {_reason(exc)}"
        with contextlib.suppress(_Stopped):
            _put(self.queue, _End(error), self.stop)

    def _demux(self) -> str | None:
        src, opt = self.src, self.options
        tb, fps = src.time_base, src.fps
        origin_s = float(src.origin * tb)
        seeked = opt.start > 0
        if seeked:
            src.container.seek(src.origin + int(opt.start / tb), stream=src.video)
        shift: float | None = None if seeked else origin_s  # seconds removed from timestamps
        held: list[av.Packet] = []  # audio packets read before the first frame decides `shift`
        written = 0
        last = -1.0
        cut: float | None = opt.end  # no audio at or after this time
        done = False
        for packet in src.container.demux(src.video, *src.audio):
            if packet.pts is None and packet.stream.type == "audio":
                continue
            if packet.stream.type == "audio":
                if packet.stream.index not in self.audio_out:
                    continue
                t = float(packet.pts * packet.time_base) - origin_s
                if cut is not None and t >= cut:
                    if done and t > cut + 2.0:
                        break
                    continue
                if shift is None:
                    held.append(packet)
                else:
                    self._send_audio(packet, shift)
                continue
            if done:
                if not self.audio_out or (packet.dts is not None and
                                          float(packet.dts * tb) - origin_s > (cut or 0) + 2.0):
                    break
                continue
            for frame in packet.decode():
                self.decoded += 1
                decoded = self.decoded
                pts = frame.pts if frame.pts is not None else \
                    src.origin + round((decoded - 1) / fps / tb)
                t = float((pts - src.origin) * tb)
                if t < opt.start - 1e-6:
                    continue
                if opt.end is not None and t >= opt.end - 1e-9:
                    done = True
                    break
                if shift is None:
                    shift = origin_s + t
                    for p in held:
                        if float(p.pts * p.time_base) >= shift - 1e-9:
                            self._send_audio(p, shift)
                    held.clear()
                index = round(t * fps) if seeked else decoded - 1
                out_pts = pts - round(shift / tb)
                _put(self.queue, _Frame(index, t, out_pts, frame.to_ndarray(format="rgb24"),
                                        written % opt.stride == 0), self.stop)
                written += 1
                last = t
                if opt.max_frames is not None and written >= opt.max_frames:
                    done = True
                    cut = t + 1 / float(fps)
                    break
        if done:
            return None
        # Fewer frames than the header announces, ending well before the stream's duration.
        decoded = self.decoded
        checks = [None if seeked or not src.frames else decoded < src.frames,
                  None if src.duration is None else last + 1.5 / float(fps) < src.duration]
        known = [c for c in checks if c is not None]
        if known and all(known):
            size = f"{decoded} of {src.frames} frames" if src.frames and not seeked else \
                f"{max(last, 0.0):.2f} s of {src.duration:.2f} s"
            return f"the video ends early, after {size} (truncated or damaged file)"
        return None

    def _send_audio(self, packet: av.Packet, shift: float) -> None:
        offset = round(shift / packet.time_base)
        if offset:
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
        _put(self.queue, packet, self.stop)


class _Writer(threading.Thread):
    """Draws the poses on each frame, encodes it, and muxes the audio packets as they are."""

    def __init__(self, path: Path, src: _Source, options: VideoOptions,
                 keypoint_set: KeypointSet, notices: list[str]) -> None:
        super().__init__(name="mipnet-video-writer", daemon=True)
        self.options, self.keypoint_set = options, keypoint_set
        self.queue: queue.Queue = queue.Queue(maxsize=options.queue_frames)
        self.error: BaseException | None = None
        fmt = CONTAINERS[path.suffix.lower()]
        # faststart: the index goes first, so browsers play the file while it downloads.
        opts = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        self.container = av.open(str(path), mode="w", format=fmt, options=opts)
        try:
            self.encoder = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            if self.encoder != "libx264":
                notices.append("this PyAV build has no libx264: encoding MPEG-4 Part 2 instead "
                               "of H.264 (browsers may not play it)")
            self.stream = self.container.add_stream(self.encoder, rate=src.fps)
            # yuv420p needs even sizes: an odd last row or column is left out.
            self.width, self.height = src.width - src.width % 2, src.height - src.height % 2
            if (self.width, self.height) != (src.width, src.height):
                notices.append(f"odd frame size {src.width}x{src.height}: the output is "
                               f"{self.width}x{self.height} (H.264 yuv420p needs even sizes)")
            self.stream.width, self.stream.height = self.width, self.height
            self.stream.pix_fmt = "yuv420p"
            self.stream.codec_context.time_base = src.time_base
            self.stream.time_base = src.time_base
            if self.encoder == "libx264":
                self.stream.options = {"crf": str(options.crf), "preset": "veryfast"}
            else:
                self.stream.bit_rate = 8_000_000
            self.audio: dict[int, Any] = {}
            for s in src.audio:
                name = s.codec_context.name
                if name not in self.container.supported_codecs:
                    notices.append(f"audio stream {s.index} ({name}) cannot be copied into "
                                   f"a {fmt.upper()} file: left out")
                    continue
                self.audio[s.index] = self.container.add_stream_from_template(s)
        except Exception:
            self.container.close()
            raise
        self.frames = 0
        self.packets = 0

    def run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                if isinstance(item, av.Packet):
                    item.stream = self.audio[item.stream.index]
                    self.container.mux(item)
                    self.packets += 1
                else:
                    self._encode(*item)
            self.container.mux(self.stream.encode(None))
        except BaseException as exc:  # noqa: BLE001 (re-raised by the consumer)
            self.error = exc
            while self.queue.get() is not None:  # let the producer finish
                pass
        finally:
            self.container.close()

    def _encode(self, frame: _Frame, poses: list[Pose], boxes: list[Box]) -> None:
        o = self.options
        rgb = frame.rgb
        if poses or (o.show_boxes and boxes):
            rgb = draw_poses(rgb, poses, self.keypoint_set, boxes=boxes,
                             kpt_thresh=o.kpt_thresh, radius=o.radius, thickness=o.thickness,
                             show_boxes=o.show_boxes, show_scores=o.show_scores)
        vf = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(rgb[:self.height, :self.width]), format="rgb24")
        vf.pts = frame.pts
        vf.time_base = self.stream.codec_context.time_base
        self.container.mux(self.stream.encode(vf))
        self.frames += 1

    def send(self, item: Any) -> None:
        """Queue an item for encoding; raise _WriterFailed if the writer stopped on an error."""
        while True:
            if self.error is not None:
                raise _WriterFailed
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class _CocoStream:
    """COCO image and annotation entries spooled to a temporary JSONL file, assembled at the end
    into a COCO dataset (two passes over the file; nothing accumulates in memory)."""

    def __init__(self, path: Path, keypoint_set: KeypointSet, file_name: str, info: dict,
                 kpt_thresh: float) -> None:
        self.path, self.keypoint_set, self.file_name = path, keypoint_set, file_name
        self.info, self.kpt_thresh = info, kpt_thresh
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        self.spool: IO[str] = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            "w+", encoding="utf-8", prefix=temp_prefix(path), suffix=".jsonl", dir=path.parent)

    def add(self, result: ImagePoses) -> None:
        part = coco_dataset([result], self.keypoint_set, self.kpt_thresh, [self.file_name])
        image = part["images"][0] | {"frame_index": result.frame_index,
                                     "timestamp": result.timestamp}
        for ann, pose in zip(part["annotations"], result.poses, strict=True):
            if pose.track_id is not None:
                ann["track_id"] = int(pose.track_id)
        self.spool.write(json_line({"image": image, "annotations": part["annotations"]},
                                   where=self.path) + "\n")

    def _entries(self) -> Iterator[dict]:
        self.spool.flush()
        self.spool.seek(0)
        for line in self.spool:
            yield json.loads(line)

    def write(self) -> None:
        """Assemble the dataset at `path` atomically."""
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write('{"info": ' + json.dumps(self.info) + ', "licenses": [], "images": [')
            for k, entry in enumerate(self._entries()):
                f.write((", " if k else "") + json.dumps(entry["image"]))
            f.write('], "annotations": [')
            ann_id = 0
            for entry in self._entries():
                for ann in entry["annotations"]:
                    ann_id += 1
                    ann["id"] = ann_id
                    f.write((", " if ann_id > 1 else "") + json.dumps(ann))
            f.write('], "categories": ' + json.dumps([self.keypoint_set.coco_category()]) + "}")

    def close(self) -> None:
        self.spool.close()


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
    """Person boxes by image id, from exactly one source (see `annotate.box_source`): a COCO
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
    src = _Source(src_path)
    with contextlib.ExitStack() as stack:
        stack.callback(src.container.close)
        if src.duration is not None and options.start >= src.duration:
            raise MipnetError(f"--start {options.start:g} s is past the end of {src_path} "
                              f"({src.duration:.2f} s)")
        summary = VideoSummary(audio_streams=len(src.audio))
        expected = src.expected_frames(options)
        stop_flag = StopRequest()
        start = time.perf_counter()
        writer: _Writer | None = None
        if out is not None:
            # Interruptions and damaged input end the body normally: the partial video is kept.
            tmp = stack.enter_context(atomic_path(Path(out)))
            writer = _Writer(tmp, src, options, estimator.keypoint_set, summary.notices)
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
            spool = _CocoStream(Path(coco), estimator.keypoint_set, src_path.name, info,
                                options.kpt_thresh)
            stack.callback(spool.close)
        reader = _Reader(src, options, set(writer.audio) if writer is not None else set())
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
        except _WriterFailed:
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
            summary.error = summary.error or f"cannot encode the video ({_reason(writer.error)})"
        if jsonl_file is not None:
            jsonl_file.write(json.dumps(summary.end_record()) + "\n")
        if writer is not None:
            if writer.error is not None:
                raise MipnetError(f"{out}: cannot encode the video "
                                  f"({_reason(writer.error)})") from writer.error
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
                 tracker: PoseTracker | None, writer: _Writer | None, jsonl_file: IO[str] | None,
                 spool: _CocoStream | None, summary: VideoSummary, src: _Source,
                 options: VideoOptions, progress: Callable[[int, int | None], None] | None,
                 expected: int | None) -> None:
        self.estimator, self.box_source, self.tracker = estimator, box_source, tracker
        self.writer, self.jsonl_file, self.spool = writer, jsonl_file, spool
        self.summary, self.src, self.options = summary, src, options
        self.progress, self.expected = progress, expected
        self.pending: list[_Frame | av.Packet] = []
        self.frame_ids: list[int] = []  # image ids of the frames the network ran on
        self.latest: tuple[list[Pose], list[Box]] = ([], [])
        self.trim = _malloc_trim()

    def loop(self, reader: _Reader, stop_flag: StopRequest) -> None:
        to_infer = 0
        while not stop_flag.is_set():
            item = reader.queue.get()
            if isinstance(item, _End):
                self.summary.error = item.error
                break
            self.pending.append(item)
            if isinstance(item, _Frame) and item.infer:
                to_infer += 1
            if to_infer == self.options.batch_frames or len(self.pending) >= MAX_PENDING:
                self.flush()
                to_infer = 0
        self.flush()

    def flush(self) -> None:
        """Run the network on the pending frames to infer, then pass everything on in order."""
        frames = [f for f in self.pending if isinstance(f, _Frame) and f.infer]
        if frames:
            images = [f.rgb for f in frames]
            boxes = self.box_source.boxes(images, [f.index + 1 for f in frames])
            poses = self.estimator.predict(images, boxes)
            shown = [person_boxes(b) for b in boxes]
            results = dict(zip((id(f) for f in frames), zip(poses, shown, strict=True),
                               strict=True))
        for item in self.pending:
            if isinstance(item, _Frame):
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

    def _record(self, frame: _Frame, poses: list[Pose], boxes: list[Box]) -> None:
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


def read_frame_records(path: str | os.PathLike) -> tuple[list[dict], dict | None]:
    """The frame records of a `--json` JSON Lines file and its end record (None: the run was
    killed before it ended, so the frames may stop anywhere)."""
    records, end = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if "end" in record:
                    end = record["end"]
                else:
                    records.append(record)
    return records, end


def frame_record(result: ImagePoses) -> dict[str, Any]:
    """One line of the JSON Lines output: the frame and its poses (COCO keypoint results with
    `box_id`, `instance` and, when tracking, `track_id`)."""
    return {
        "frame_index": result.frame_index,
        "timestamp": result.timestamp,
        "image_id": result.image_id,
        "width": result.width,
        "height": result.height,
        "boxes": len(result.boxes),
        "poses": [pose_result(result.image_id, p) for p in result.poses],
    }
