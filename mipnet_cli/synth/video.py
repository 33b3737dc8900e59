"""Synthetic crowd videos: people walking (gait cycle), turning and crossing each other.

A static camera looks at a ground plane; each walker has a position (X, Z) on it, a heading,
a speed and a gait phase. Nearer people are larger, lower in the frame and drawn later. The
video is written with PyAV (H.264 yuv420p when libx264 is available, MPEG-4 otherwise) with an
optional AAC audio track (ambient noise, a quiet tone and footsteps at heel strikes), and the
ground truth is a COCO file with one image entry per frame and a stable track_id per person.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..core.errors import MipnetError
from ..core.files import atomic_path, write_json
from ..core.keypoints import COCO17
from .background import background
from .body import L_TOE, Figure, Proportions, gait_pose, pose_figure, sample_proportions
from .dataset import SynthStats, annotation, keep_visible
from .draw import Appearance, sample_appearance
from .scene import (
    Person,
    PersonTruth,
    camera_effects,
    distractors_for,
    group_sizes,
    render_scene,
)

AUDIO_RATE = 44100
STRIDE = 1.3  # body heights travelled per gait cycle


@dataclass
class VideoConfig:
    """What `mipnet synth --video` generates."""

    frames: int = 48
    fps: float = 12.0
    width: int = 640
    height: int = 480
    min_people: int = 2
    max_people: int = 6
    overlap: float = 0.5  # fraction of walkers who walk in overlapping groups of 2-3
    seed: int = 0
    clip: int = 0  # which clip of this seed (randomness is seeded with (seed, clip))
    audio: bool = True
    distractors: float = 0.3
    min_visible: float = 0.1
    crf: int = 20

    def validate(self) -> None:
        """Raise MipnetError for settings that cannot work."""
        problems = []
        if self.frames < 1:
            problems.append("--frames must be at least 1")
        if not 0 < self.fps <= 240:
            problems.append("--fps must be in (0, 240]")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            problems.append("video width and height must be even and at least 32 "
                            "(yuv420p needs even sizes)")
        if not 0 <= self.min_people <= self.max_people or self.max_people < 1:
            problems.append("need 0 <= --min-people <= --max-people and --max-people >= 1")
        if not 0.0 <= self.overlap <= 1.0:
            problems.append("--overlap must be between 0 and 1")
        if problems:
            raise MipnetError("; ".join(problems))


@dataclass
class _Camera:
    focal: float
    horizon: float  # image row of the horizon
    height: float  # camera height in body heights
    z_near: float
    z_far: float

    def x_limit(self, z: float, width: int) -> float:
        return 0.5 * width * z / self.focal


@dataclass
class _Walker:
    track_id: int
    x: float
    z: float
    heading: float  # direction of travel on the ground: (cos, sin) in (X, Z)
    target: float
    speed: float  # body heights per second (0: standing)
    phase: float
    amplitude: float
    next_turn: float  # time of the next spontaneous turn
    head_freq: float
    prop: Proportions
    look: Appearance
    leader: int | None  # index of the walker this one keeps company with
    offset: tuple[float, float]  # (X, Z) from the leader


def _make_camera(rng: np.random.Generator, width: int, height: int) -> _Camera:
    focal = 1.1 * width
    z_near, z_far = focal / (0.8 * height), focal / (0.32 * height)
    cam_h = float(rng.uniform(0.9, 1.15))
    horizon = 0.98 * height - focal * cam_h / z_near
    return _Camera(focal, horizon, cam_h, z_near, z_far)


def _make_walkers(rng: np.random.Generator, n: int, cam: _Camera, width: int,
                  overlap: float) -> list[_Walker]:
    """Walkers set up to cross: half come from the left heading right, half the other way.

    About `overlap` of them walk in groups of 2-3: a leader and companions that keep a small
    sideways and in-depth offset from it, so they overlap for the whole clip.
    """
    walkers: list[_Walker] = []
    for size in group_sizes(rng, n, overlap) + [1] * n:
        if len(walkers) == n:
            break
        size = min(size, n - len(walkers))
        i = len(walkers)
        z = float(rng.uniform(cam.z_near, cam.z_far))
        lim = cam.x_limit(z, width)
        from_left = i % 2 == 0
        x = float(rng.uniform(-1.0, -0.2) if from_left else rng.uniform(0.2, 1.0)) * lim
        kind = rng.random()
        if kind < 0.6:  # across the frame
            heading = (0.0 if from_left else np.pi) + rng.normal(0, 0.35)
        elif kind < 0.85:  # towards or away from the camera
            heading = float(rng.choice([-np.pi / 2, np.pi / 2]) + rng.normal(0, 0.4))
        else:
            heading = float(rng.uniform(0, 2 * np.pi))
        speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(0.55, 1.2))
        for member in range(size):
            offset = (0.0, 0.0) if member == 0 else (
                float(rng.normal(0, 0.12)), float(rng.choice([-1, 1]) * rng.uniform(0.2, 0.5)))
            walkers.append(_Walker(
                track_id=len(walkers) + 1, x=x + offset[0], z=z + offset[1], heading=heading,
                target=heading, speed=speed, phase=float(rng.uniform(0, 2 * np.pi)),
                amplitude=float(rng.uniform(0.7, 1.2)), next_turn=float(rng.uniform(1.0, 5.0)),
                head_freq=float(rng.uniform(0.1, 0.5)), prop=sample_proportions(rng),
                look=sample_appearance(rng), leader=i if member else None, offset=offset))
    return walkers


def _step(w: _Walker, walkers: list[_Walker], rng: np.random.Generator, cam: _Camera,
          width: int, t: float, dt: float) -> None:
    """Advance one walker by dt seconds: turn towards its target, walk, stay near the view.

    Companions copy their leader's position (plus their offset), heading and speed.
    """
    if w.leader is not None:
        lead = walkers[w.leader]
        w.x, w.z = lead.x + w.offset[0], lead.z + w.offset[1]
        w.heading, w.speed = lead.heading, lead.speed
        w.phase += 2 * np.pi * w.speed / STRIDE * dt
        return
    lim = 0.85 * cam.x_limit(w.z, width)
    dx, dz = np.cos(w.heading), np.sin(w.heading)
    out_x = (w.x > lim and dx > 0) or (w.x < -lim and dx < 0)
    out_z = (w.z < cam.z_near and dz < 0) or (w.z > cam.z_far and dz > 0)
    if out_x or out_z:  # turn back into view
        w.target = float(np.arctan2(-dz if out_z else dz, -dx if out_x else dx))
    elif t >= w.next_turn:
        w.target = w.heading + float(rng.choice([-1, 1]) * rng.uniform(np.pi / 3, np.pi))
        w.next_turn = t + float(rng.uniform(2.0, 6.0))
    diff = (w.target - w.heading + np.pi) % (2 * np.pi) - np.pi
    w.heading += float(np.clip(diff, -2.0 * dt, 2.0 * dt))  # at most ~115 degrees a second
    w.x += w.speed * np.cos(w.heading) * dt
    w.z += w.speed * np.sin(w.heading) * dt
    w.phase += 2 * np.pi * w.speed / STRIDE * dt


def _figure(w: _Walker, cam: _Camera, width: int, t: float) -> Figure:
    """The walker posed for time t and projected through the camera."""
    yaw = float(np.arctan2(np.cos(w.heading), -np.sin(w.heading)))
    amplitude = w.amplitude * min(1.0, w.speed / 0.8) if w.speed > 0 else 0.05
    pose = gait_pose(w.phase, amplitude)
    pose.head_yaw = 0.5 * np.sin(2 * np.pi * w.head_freq * t + w.track_id)
    pitch = float(np.arctan2(cam.height - 0.5, w.z))
    fig = pose_figure(pose, w.prop, yaw, pitch)
    scale = cam.focal / w.z
    fig = fig.rescaled(scale)
    ground = fig.points[[15, 16, L_TOE, L_TOE + 1], 1].max() + 0.02 * scale
    x_img = width / 2 + cam.focal * w.x / w.z
    y_img = cam.horizon + cam.focal * cam.height / w.z
    return fig.moved(x_img - fig.points[11:13, 0].mean(), y_img - ground)


def _simulate(config: VideoConfig, rng: np.random.Generator
              ) -> tuple[_Camera, list[list[Person]], list[list[tuple[int, float]]]]:
    """People (back to front) for every frame, and the heel strikes (track, scale) per frame."""
    cam = _make_camera(rng, config.width, config.height)
    n = int(rng.integers(config.min_people, config.max_people + 1))
    walkers = _make_walkers(rng, n, cam, config.width, config.overlap)
    dt = 1.0 / config.fps
    frames, steps = [], []
    for i in range(config.frames):
        t = i * dt
        people = []
        for w in sorted(walkers, key=lambda w: -w.z):
            people.append(Person(_figure(w, cam, config.width, t), w.look, w.track_id))
        frames.append(people)
        strikes = []
        for w in walkers:
            before = np.floor(w.phase / np.pi)
            _step(w, walkers, rng, cam, config.width, t, dt)
            if w.speed > 0 and np.floor(w.phase / np.pi) != before:
                strikes.append((w.track_id, cam.focal / w.z / config.height))
        steps.append(strikes)
    return cam, frames, steps


def _soundtrack(config: VideoConfig, steps: list[list[tuple[int, float]]],
                rng: np.random.Generator) -> np.ndarray:
    """Mono float32 audio: brown noise, a soft 110/165 Hz tone, footstep thumps."""
    n = int(round(config.frames / config.fps * AUDIO_RATE))
    t = np.arange(n) / AUDIO_RATE
    brown = np.cumsum(rng.normal(0, 1, n))
    brown -= np.convolve(brown, np.ones(2048) / 2048, mode="same")  # remove the drift
    audio = 0.03 * brown / max(np.abs(brown).max(), 1e-9)
    audio += 0.02 * np.sin(2 * np.pi * 110 * t) + 0.01 * np.sin(2 * np.pi * 165 * t)
    length = int(0.06 * AUDIO_RATE)
    env = np.exp(-np.arange(length) / (0.012 * AUDIO_RATE))
    for i, strikes in enumerate(steps):
        for _, size in strikes:
            start = int((i + 0.5) / config.fps * AUDIO_RATE)
            seg = slice(start, min(n, start + length))
            k = seg.stop - seg.start
            if k > 0:
                thump = np.sin(2 * np.pi * 70 * np.arange(k) / AUDIO_RATE)
                thump += 0.5 * rng.normal(0, 1, k)
                audio[seg] += 0.25 * size * env[:k] * thump
    return np.clip(audio, -1, 1).astype(np.float32)


def video_codec() -> str:
    """libx264 when this PyAV build has it, else mpeg4."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class _FrameRenderer:
    """Renders frame i from its people over the video's fixed background and distractors."""

    def __init__(self, base: np.ndarray, distractors: list, config: VideoConfig):
        self.base, self.distractors, self.config = base, distractors, config

    def __call__(self, job: tuple[int, list[Person]]) -> tuple[np.ndarray, list[PersonTruth]]:
        scene = render_scene(job[1], self.base, self.distractors)
        # The same camera (exposure, white balance, sensor pattern) for every frame.
        cam_rng = np.random.default_rng([self.config.seed, self.config.clip, 1])
        image = camera_effects(cam_rng, scene.image)
        return image, keep_visible(scene.people, self.config.min_visible)


_WORKER: _FrameRenderer | None = None


def _init_worker(renderer: _FrameRenderer) -> None:
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = renderer


def _render_in_worker(job: tuple[int, list[Person]]) -> tuple[np.ndarray, list[PersonTruth]]:
    assert _WORKER is not None
    return _WORKER(job)


def generate_video(path: str | Path, config: VideoConfig, workers: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> SynthStats:
    """Write the MP4 at `path` and its ground truth beside it (same name, .json)."""
    config.validate()
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise MipnetError(f"{path}: the video file name must end in .mp4")
    rng = np.random.default_rng([config.seed, config.clip, 0])
    cam, frames, steps = _simulate(config, rng)
    base = background(rng, config.height, config.width)
    figures = [p.figure for p in frames[0]]
    distractors = distractors_for(rng, figures, config.height, config.width, config.distractors)
    audio = _soundtrack(config, steps, rng) if config.audio else None

    start = time.perf_counter()
    stats = SynthStats()
    images, annotations = [], []
    jobs = list(enumerate(frames))
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            writer = _Writer(container, config, audio)
            renderer = _FrameRenderer(base, distractors, config)
            if workers > 1:
                ctx = mp.get_context("spawn")
                with ctx.Pool(workers, _init_worker, (renderer,)) as pool:
                    rendered = pool.imap(_render_in_worker, jobs, chunksize=2)
                    _consume(rendered, writer, path.name, config, stats, images, annotations,
                             progress)
            else:
                _consume(map(renderer, jobs), writer, path.name, config, stats, images,
                         annotations, progress)
            writer.close()
    info = {"description": "mipnet synthetic crowd video", "config": asdict(config),
            "video": path.name, "codec": video_codec(), "fps": config.fps,
            "audio": config.audio, "crowding": stats.summary()}
    write_json(path.with_suffix(".json"), {
        "info": info, "images": images, "annotations": annotations,
        "categories": [COCO17.coco_category()],
    })
    stats.seconds = time.perf_counter() - start
    return stats


def _consume(rendered, writer: _Writer, name: str, config: VideoConfig, stats: SynthStats,
             images: list, annotations: list, progress: Callable[[int, int], None] | None
             ) -> None:
    for i, (image, people) in enumerate(rendered):
        writer.frame(image)
        images.append({"id": i + 1, "file_name": name, "width": config.width,
                       "height": config.height, "frame_index": i,
                       "timestamp": round(i / config.fps, 6)})
        stats.add(people)
        for p in people:
            annotations.append(annotation(p, i + 1, len(annotations) + 1))
        if progress is not None:
            progress(i + 1, config.frames)


class _Writer:
    """Encodes frames and interleaves the audio that belongs up to each frame's end."""

    def __init__(self, container, config: VideoConfig, audio: np.ndarray | None):
        self.container = container
        self.config = config
        rate = Fraction(config.fps).limit_denominator(1001)
        self.video = container.add_stream(video_codec(), rate=rate)
        self.video.width, self.video.height = config.width, config.height
        self.video.pix_fmt = "yuv420p"
        if self.video.codec_context.name == "libx264":
            self.video.options = {"crf": str(config.crf), "preset": "veryfast"}
        else:
            self.video.bit_rate = 4_000_000
        self.audio = audio
        self.sent = 0
        self.frames = 0
        if audio is not None:
            self.astream = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")

    def frame(self, rgb: np.ndarray) -> None:
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        vf.pts = self.frames
        vf.time_base = Fraction(1, 1) / self.video.average_rate
        self.container.mux(self.video.encode(vf))
        self.frames += 1
        if self.audio is not None:
            upto = min(len(self.audio), int(round(self.frames / self.config.fps * AUDIO_RATE)))
            self._audio(upto)

    def _audio(self, upto: int) -> None:
        chunk = 1024
        while self.sent + chunk <= upto or (upto == len(self.audio) and self.sent < upto):
            piece = self.audio[self.sent:min(self.sent + chunk, upto)]
            af = av.AudioFrame.from_ndarray(piece[None, :], format="fltp", layout="mono")
            af.sample_rate = AUDIO_RATE
            af.pts = self.sent
            af.time_base = Fraction(1, AUDIO_RATE)
            self.container.mux(self.astream.encode(af))
            self.sent += len(piece)

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self._audio(len(self.audio))
            self.container.mux(self.astream.encode(None))
