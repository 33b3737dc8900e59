"""Video decode and encode on threads, with PyAV: the two ends of `annotate.video`.

`FrameReader` decodes the frames of a time range (and demuxes the audio packets that go with
them) into a bounded queue, with timestamps shifted to start at 0; `VideoWriter` draws the
poses on each frame, encodes H.264 (MPEG-4 Part 2 where PyAV has no libx264) and remuxes the
audio packets untouched. `VideoOptions` holds what either end and the pipeline need.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..core.errors import MipnetError
from ..core.keypoints import KeypointSet
from ..core.results import Box, Pose
from .render import draw_poses

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


@functools.cache
def malloc_trim() -> Callable[[], object] | None:
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


def error_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


class VideoSource:
    """The input container and what the pipeline needs to know about its streams."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise MipnetError(f"{path}: video file not found")
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, OSError) as exc:
            raise MipnetError(f"{path}: cannot read the video ({error_reason(exc)})") from None
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
class Frame:
    index: int  # position in the source (0-based)
    time: float  # seconds from the stream start
    pts: int  # output pts (source time base)
    rgb: np.ndarray
    infer: bool


@dataclass
class End:
    error: str | None


class _Stopped(Exception):
    """The consumer asked the reader to stop."""


class WriterFailed(Exception):
    """The writer thread stopped on an error (kept in `VideoWriter.error`)."""


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


class FrameReader(threading.Thread):
    """Decodes the frames of the range, and forwards the audio packets that go with them."""

    def __init__(self, src: VideoSource, options: VideoOptions, audio_out: set[int]) -> None:
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
                     f"{self.decoded} frames ({error_reason(exc)})")
        except Exception as exc:  # noqa: BLE001 (reported to the consumer, never lost)
            error = f"{type(exc).__name__}: {error_reason(exc)}"
        with contextlib.suppress(_Stopped):
            _put(self.queue, End(error), self.stop)

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
                _put(self.queue, Frame(index, t, out_pts, frame.to_ndarray(format="rgb24"),
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


class VideoWriter(threading.Thread):
    """Draws the poses on each frame, encodes it, and muxes the audio packets as they are."""

    def __init__(self, path: Path, src: VideoSource, options: VideoOptions,
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

    def _encode(self, frame: Frame, poses: list[Pose], boxes: list[Box]) -> None:
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
        """Queue an item for encoding; raise WriterFailed if the writer stopped on an error."""
        while True:
            if self.error is not None:
                raise WriterFailed
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


