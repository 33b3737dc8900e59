"""Speed measurements: the pose network's variants, crop + decode, and the video pipeline.

Three parts, all measured in one process:

- **network**: per-crop latency and throughput of N=1 (single-instance network), N=2 as two
  separate passes (`model(x, lam)` per λ, what the official evaluation does) and N=2 with the
  shared trunk (`model.forward_multi`), with or without flip test, in fp32/fp16/bf16, contiguous
  or channels_last, eager or `torch.compile`d. Every variant runs once per round, round-robin
  (the starting variant rotates), after warm-up; a variant's time is the median over rounds and
  its ratio to N=1 is the median of the per-round ratios, so that load changes between rounds
  (other processes on the machine) cancel out.
- **crop + decode**: the batched on-device crop (`warp_crops`) and heatmap decode
  (`decode_heatmaps` + copy to the host) per crop, timed in the same rounds, as a fraction of the
  N=2 shared-trunk network's time per crop.
- **pipeline**: a synthetic crowd video through `mipnet_cli.video.annotate_video` (decode,
  detect, crop, pose, merge, render, encode in three threads), against the same stages run one
  after another on the same frames; peak memory (RSS, and CUDA allocations on a GPU).

CUDA timings use events after a synchronize; CPU timings use `time.perf_counter`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torchvision
from rich import box
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from .annotate import TableBoxes
from .decode import decode_heatmaps, flip_average
from .detector import (
    DEFAULT_DETECTOR,
    PersonDetector,
    load_gt_boxes,
    open_detector,
    weights_cached,
)
from .engine import CropPoses, EngineOptions, PoseEstimator
from .errors import MipnetError
from .geometry import box_to_center_scale, warp_crops
from .hardware import cpu_model
from .io import atomic_path, write_json
from .keypoints import COCO17
from .models import build_model, instance_lambdas
from .render import draw_poses
from .synth import VideoConfig, generate_video
from .video import VideoOptions, annotate_video
from .weights import shipped_detector

MODES = ("n1", "n2_separate", "n2_shared")
MODE_LABELS = {"n1": "N=1", "n2_separate": "N=2 separate", "n2_shared": "N=2 shared trunk"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ("contiguous", "channels_last")
CPU_DETECTOR = "yolox_nano"  # the shipped COCO YOLOX-Nano

# Targets (see benchmarks/RESULTS.md): ratios are checked on the CPU, absolute rates on a GPU.
SHARED_OVER_N1_MAX = 1.45
SEPARATE_OVER_SHARED_MIN = 1.35
CROP_DECODE_FRACTION_MAX = 0.10
PIPELINE_OVER_BOUND_MIN = 0.85
GPU_CROPS_PER_S_MIN = 3000.0
GPU_VIDEO_FPS_MIN = 25.0

Progress = Callable[[str], None]

# Command-line spellings of the variant axes.
FLIP_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}
LAYOUT_CHOICES = {"contiguous": ("contiguous",), "channels_last": ("channels_last",),
                  "both": LAYOUTS}


def parse_size(text: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise MipnetError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    return w, h


def default_detector(device: torch.device) -> str:
    """torchvision's Faster R-CNN R50-FPN v2 on a GPU; on the CPU (where that one takes
    seconds a frame) the shipped COCO YOLOX-Nano."""
    return DEFAULT_DETECTOR if device.type == "cuda" else CPU_DETECTOR


# ----------------------------------------------------------------------------- machine, timing


def _nvidia_driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def machine_info(device: torch.device) -> dict[str, Any]:
    """The hardware and software the numbers were measured on."""
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pyav": av.__version__,
        "device": str(device),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "driver": _nvidia_driver(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine."""
    gpu = info.get("gpu")
    gpu_text = (f"{gpu['name']} ({gpu['memory_gib']} GiB, driver {gpu['driver']}, "
                f"CUDA {gpu['cuda']})" if gpu else "no GPU")
    return (f"{info['cpu']}, {info['cpu_cores_usable']} cores ({info['torch_threads']} torch "
            f"threads), {gpu_text}; torch {info['torch']}, torchvision {info['torchvision']}; "
            f"load average at start {info['load_average']}")


class Clock:
    """Times one call: CUDA events around it (after a synchronize) or `perf_counter`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object]) -> float:
        """Seconds `fn()` takes, including the device work it queues."""
        if self.cuda:
            self.sync()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def run_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    clock: Clock,
    progress: Progress | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of every function, round-robin: one call of each per round.

    `warmup` rounds are run first and discarded; the round's first function rotates so that
    no function always follows the same one.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be at least 1 and warmup at least 0")
    names = list(fns)
    for w in range(warmup):
        for name in names:
            fns[name]()
        if progress:
            progress(f"warm-up {w + 1}/{warmup}")
    clock.sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(clock.time(fns[name]))
        if progress:
            progress(f"round {r + 1}/{repeats}")
    return times


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, np.float64)))


def _iqr_fraction(values: Sequence[float]) -> float:
    """Inter-quartile range relative to the median (the spread of the rounds)."""
    q1, q2, q3 = np.percentile(np.asarray(values, np.float64), [25, 50, 75])
    return float((q3 - q1) / q2) if q2 > 0 else 0.0


def _paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[r] / b[r]."""
    return _median([x / y for x, y in zip(a, b, strict=True)])


@contextlib.contextmanager
def peak_rss_window() -> Iterator[dict[str, float | str]]:
    """Peak resident memory (MiB) while the block runs, in the yielded dict's "peak_rss_mib"
    (and the resident memory on entry, "start_rss_mib").

    Linux: the kernel's high-water mark is reset on entry (/proc/self/clear_refs) and read on
    exit (VmHWM). Elsewhere, or when the reset is refused, the process's lifetime peak is
    reported (`rss_scope` says which).
    """
    result: dict[str, float | str] = {}
    scope = "process lifetime"
    try:
        Path("/proc/self/clear_refs").write_text("5")
        scope = "this run"
    except OSError:
        pass
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                result["start_rss_mib"] = round(int(line.split()[1]) / 1024.0, 1)
    yield result
    peak = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024.0
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        scope = "process lifetime"
    result["peak_rss_mib"] = round(peak, 1)
    result["rss_scope"] = scope


# ----------------------------------------------------------------------------- FLOPs


def count_flops(arch: str, image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """FLOPs per crop (conv and matmul, `FlopCounterMode`, multiply-add = 2) for N=1, N=2 run as
    two passes and N=2 with the shared trunk; counted on the meta device (no compute)."""
    single = build_model(arch, num_instances=1, image_size=image_size).eval().to("meta")
    multi = build_model(arch, num_instances=2, image_size=image_size).eval().to("meta")
    h, w = multi.config.image_size
    x = torch.empty(1, 3, h, w, device="meta")
    lams = instance_lambdas(2).to("meta")
    with torch.inference_mode():
        counts = {
            "n1": _flops(lambda: single(x)),
            "n2_separate": _flops(lambda: [multi(x, lam[None]) for lam in lams]),
            "n2_shared": _flops(lambda: multi.forward_multi(x, lams)),
        }
    return {
        "arch": arch,
        "image_size": [h, w],
        "gflops_per_crop": {k: round(v / 1e9, 3) for k, v in counts.items()},
        "ratio_to_n1": {k: round(v / counts["n1"], 4) for k, v in counts.items()},
        "counter": "torch.utils.flop_counter.FlopCounterMode (conv + matmul; multiply-add = 2)",
    }


def _flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------- network


@dataclass
class NetworkSettings:
    """What the network part measures."""

    arch: str = "hrnet_w32"
    image_size: tuple[int, int] | None = None  # (height, width); None: the architecture's
    batches: tuple[int, ...] = (8,)
    flips: tuple[bool, ...] = (False,)
    dtypes: tuple[str, ...] = ("fp32",)
    layouts: tuple[str, ...] = ("contiguous",)
    compiled: tuple[bool, ...] = (False,)
    repeats: int = 5
    warmup: int = 1
    crop_decode: bool = True
    frame_size: tuple[int, int] = (1080, 1920)  # (height, width) of the frames crops come from
    people_per_frame: int = 10

    def validate(self, device: torch.device) -> None:
        problems = []
        if not self.batches or min(self.batches) < 1:
            problems.append("batch sizes must be at least 1")
        if unknown := set(self.dtypes) - set(DTYPES):
            problems.append(f"unknown dtypes {sorted(unknown)}; choose from {', '.join(DTYPES)}")
        if device.type != "cuda" and "fp16" in self.dtypes:
            problems.append("fp16 is measured on CUDA only (use bf16 on the CPU)")
        if unknown := set(self.layouts) - set(LAYOUTS):
            problems.append(f"unknown layouts {sorted(unknown)}; choose from {', '.join(LAYOUTS)}")
        if self.repeats < 1 or self.warmup < 0 or self.people_per_frame < 1:
            problems.append("repeats and people per frame must be at least 1, warmup >= 0")
        if not (self.batches and self.flips and self.dtypes and self.layouts and self.compiled):
            problems.append("every variant axis needs at least one value")
        if problems:
            raise MipnetError("; ".join(problems))


@dataclass(frozen=True)
class Variant:
    """One configuration of the pose network."""

    mode: str
    batch: int
    flip: bool
    dtype: str
    layout: str
    compiled: bool

    @property
    def key(self) -> str:
        return "|".join([self.mode, f"b{self.batch}", "flip" if self.flip else "noflip",
                         self.dtype, self.layout, "compiled" if self.compiled else "eager"])

    def with_mode(self, mode: str) -> Variant:
        return Variant(mode, self.batch, self.flip, self.dtype, self.layout, self.compiled)


def _network_fn(model: torch.nn.Module, variant: Variant, x: torch.Tensor,
                lams: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The heatmaps of one variant, as the engine computes them (flip: a second pass on the
    mirrored crops, then `flip_average`)."""
    pairs = COCO17.flip_pairs

    def heatmaps(inp: torch.Tensor) -> torch.Tensor:
        if variant.mode == "n1":
            return model(inp)
        if variant.mode == "n2_separate":
            b = inp.shape[0]
            return torch.stack([model(inp, lam.expand(b, -1)) for lam in lams], dim=1)
        return model.forward_multi(inp, lams)

    def run(inp: torch.Tensor) -> torch.Tensor:
        out = heatmaps(inp)
        if variant.flip:
            out = flip_average(out, heatmaps(inp.flip(-1)), pairs)
        return out

    fn = torch.compile(run, dynamic=False) if variant.compiled else run
    return lambda: fn(x)


def _frames_and_boxes(settings: NetworkSettings, batch: int, device: torch.device,
                      input_size: tuple[int, int], rng: np.random.Generator
                      ) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray, np.ndarray]:
    """Frames on the device with `people_per_frame` person-sized boxes each (the last frame
    holds the rest): the frames, image index, centres and scales of `batch` boxes."""
    fh, fw = settings.frame_size
    n_frames = math.ceil(batch / settings.people_per_frame)
    frames = [torch.from_numpy(rng.integers(0, 256, (fh, fw, 3), dtype=np.uint8)).to(device)
              for _ in range(n_frames)]
    index = np.arange(batch) // settings.people_per_frame
    h = rng.uniform(0.25, 0.6, batch) * fh
    w = h * rng.uniform(0.3, 0.5, batch)
    x = rng.uniform(0, fw - w)
    y = rng.uniform(0, fh - h)
    ih, iw = input_size
    centers, scales = box_to_center_scale(np.stack([x, y, w, h], 1), iw / ih)
    return frames, index, centers, scales


def run_network(settings: NetworkSettings, device: torch.device,
                progress: Progress | None = None) -> dict[str, Any]:
    """Measure every network variant (and crop + decode) interleaved; see the module doc."""
    settings.validate(device)
    base = {n: build_model(settings.arch, num_instances=n, image_size=settings.image_size).eval()
            for n in (1, 2)}
    image_size = base[2].config.image_size
    ih, iw = image_size
    models: dict[tuple[int, str, str], torch.nn.Module] = {}
    for n, model in base.items():
        for dtype in settings.dtypes:
            for layout in settings.layouts:
                m = copy.deepcopy(model).to(device=device, dtype=DTYPES[dtype])
                if layout == "channels_last":
                    m = m.to(memory_format=torch.channels_last)
                models[n, dtype, layout] = m
    gen = torch.Generator().manual_seed(0)
    inputs: dict[tuple[int, str, str], torch.Tensor] = {}
    variants: list[Variant] = []
    for batch in settings.batches:
        for dtype in settings.dtypes:
            for layout in settings.layouts:
                x = torch.randn(batch, 3, ih, iw, generator=gen).to(device, DTYPES[dtype])
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                inputs[batch, dtype, layout] = x
                for compiled in settings.compiled:
                    for flip in settings.flips:
                        variants.extend(Variant(mode, batch, flip, dtype, layout, compiled)
                                        for mode in MODES)
    fns: dict[str, Callable[[], object]] = {}
    for v in variants:
        n = 1 if v.mode == "n1" else 2
        lams = instance_lambdas(2).to(device, DTYPES[v.dtype])
        fns[v.key] = _network_fn(models[n, v.dtype, v.layout], v,
                                 inputs[v.batch, v.dtype, v.layout], lams)
    if settings.crop_decode:
        rng = np.random.default_rng(0)
        hh, hw = base[2].config.heatmap_size
        for batch in settings.batches:
            frames, index, centers, scales = _frames_and_boxes(settings, batch, device,
                                                               image_size, rng)
            fns[f"crop|b{batch}"] = (
                lambda f=frames, i=index, c=centers, s=scales: warp_crops(
                    f, c, s, (iw, ih), image_index=i, device=device, normalize=True))
            hm = torch.rand(batch, 2, COCO17.num_joints, hh, hw, generator=gen).to(device)
            c2 = np.repeat(centers[:, None], 2, axis=1)
            s2 = np.repeat(scales[:, None], 2, axis=1)
            fns[f"decode|b{batch}"] = lambda h=hm, c=c2, s=s2: _decode_to_host(h, c, s)
    with torch.inference_mode():
        times = run_interleaved(fns, settings.repeats, settings.warmup, Clock(device), progress)
    flops = count_flops(settings.arch, image_size)["gflops_per_crop"]
    rows = [_variant_row(v, times, flops) for v in variants]
    crop_decode = []
    if settings.crop_decode:
        ref = (settings.dtypes[0], settings.layouts[0], settings.compiled[0])
        for batch in settings.batches:
            crop, dec = times[f"crop|b{batch}"], times[f"decode|b{batch}"]
            for flip in settings.flips:
                net = times[Variant("n2_shared", batch, flip, *ref).key]
                crop_decode.append({
                    "batch": batch, "flip": flip, "network_variant": ref,
                    "crop_ms_per_crop": 1e3 * _median(crop) / batch,
                    "decode_ms_per_crop": 1e3 * _median(dec) / batch,
                    "network_ms_per_crop": 1e3 * _median(net) / batch,
                    "fraction": _median([(a + b) / c for a, b, c in zip(crop, dec, net,
                                                                        strict=True)]),
                })
    return {
        "settings": asdict(settings) | {"image_size": list(image_size)},
        "rows": rows,
        "crop_decode": crop_decode,
        "samples_s": times,
    }


def _decode_to_host(heatmaps: torch.Tensor, centers: np.ndarray,
                    scales: np.ndarray) -> np.ndarray:
    """What `PoseEstimator.decode` does: decode, then copy (x, y, confidence) to the host."""
    preds, maxvals = decode_heatmaps(heatmaps, centers, scales)
    return torch.cat([preds, maxvals], dim=-1).cpu().numpy()


def _variant_row(v: Variant, times: dict[str, list[float]],
                 flops: dict[str, float]) -> dict[str, Any]:
    t = times[v.key]
    med = _median(t)
    gflops = flops[v.mode] * (2 if v.flip else 1)
    row: dict[str, Any] = {
        "mode": v.mode, "batch": v.batch, "flip": v.flip, "dtype": v.dtype,
        "layout": v.layout, "compiled": v.compiled,
        "ms_per_call": 1e3 * med,
        "ms_per_crop": 1e3 * med / v.batch,
        "crops_per_s": v.batch / med,
        "spread": _iqr_fraction(t),
        "gflop_per_s": gflops * v.batch / med,
        "ratio_to_n1": _paired_ratio(t, times[v.with_mode("n1").key]),
    }
    if v.mode == "n2_shared":
        row["separate_over_shared"] = _paired_ratio(times[v.with_mode("n2_separate").key], t)
    return row


# ----------------------------------------------------------------------------- pipeline


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
    half: bool = False  # fp16 pose network on CUDA
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


def _sequential(video: Path, estimator: PoseEstimator, box_source: Any, out: Path,
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
                        kps.append(estimator.decode(hm, centers[sl], scales[sl]))
                with timer.stage("merge"):
                    crop_poses = CropPoses(np.concatenate(kps), centers, scales)
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
        _sequential(video, estimator, box_source, tmp / "warmup.mp4", settings.batch_frames,
                    clock, max_frames=1)
        stage_runs, pipe_runs, mems = [], [], []
        frames = boxes = 0
        for r in range(settings.repeats):
            seconds, frames, boxes = _sequential(video, estimator, box_source, tmp / "seq.mp4",
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


# ----------------------------------------------------------------------------- memory


def pipeline_memory(settings: PipelineSettings, device: torch.device, factor: int = 10,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    """Peak memory of the pipeline on the first `settings.frames` frames of a video and on all
    of it (`factor` times as many), each run in a fresh process (so that neither run's peak
    hides in the other's), with `env` added to the processes' environment (e.g. glibc's
    MALLOC_MMAP_THRESHOLD_). Both runs load the same video and ground-truth file, so only the
    number of frames differs."""
    ctx = mp.get_context("spawn")
    results = []
    long_frames = settings.frames * factor
    with tempfile.TemporaryDirectory(prefix="mipnet-mem-") as tmp, _environ(env or {}):
        path = make_synthetic_video(Path(tmp) / "crowd.mp4", settings, long_frames)
        for frames in (settings.frames, long_frames):
            with ctx.Pool(1) as pool:
                res = pool.apply(_memory_child, (asdict(settings), str(path), str(device),
                                                 frames))
            results.append({"frames": frames, **res})
    short, long = results
    return {
        "settings": asdict(settings),
        "factor": factor,
        "env": env or {},
        "runs": results,
        "rss_growth": long["peak_rss_mib"] / short["peak_rss_mib"],
        **({"cuda_growth": long["cuda_peak_allocated_mib"] / short["cuda_peak_allocated_mib"]}
           if device.type == "cuda" else {}),
    }


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the block (and the processes it starts)."""
    before = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _memory_child(settings: dict[str, Any], video: str, device: str, max_frames: int
                  ) -> dict[str, Any]:
    s = PipelineSettings(**settings)
    dev = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="mipnet-memrun-") as tmp:
        estimator = build_estimator(s, dev)
        box_source, _ = _box_source(s, Path(video), dev)
        seconds, frames, mem = _pipelined(Path(video), estimator, box_source,
                                          Path(tmp) / "out.mp4", s.batch_frames, Clock(dev),
                                          max_frames=max_frames)
    return {"seconds": seconds, "frames_done": frames, **mem}


# ----------------------------------------------------------------------------- everything


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op CPU threads (None: leave the setting alone)."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise MipnetError("threads must be at least 1")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_bench(device: torch.device, network: NetworkSettings | None,
              pipeline: PipelineSettings | None, flops_arch: str | None = "hrnet_w32",
              progress: Progress | None = None, threads: int | None = None) -> dict[str, Any]:
    """The machine, FLOPs, network and pipeline measurements and the targets, as JSON data.

    `threads` sets torch's CPU threads for the run. On a CPU shared with other work, one
    thread gives stable ratios: with several, each parallel region waits for its slowest
    thread, and a thread that loses its core to another process stalls all of them.
    """
    with torch_threads(threads):
        result: dict[str, Any] = {"machine": machine_info(device)}
        if flops_arch:
            result["flops"] = count_flops(flops_arch)
        if network is not None:
            result["network"] = run_network(network, device, progress)
        if pipeline is not None:
            result["pipeline"] = run_pipeline(pipeline, device, progress)
    result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result["targets"] = evaluate_targets(result)
    return result


def _target(name: str, value: float | None, limit: str, met: bool | None,
            note: str = "") -> dict[str, Any]:
    return {"target": name, "measured": value, "limit": limit, "met": met, "note": note}


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (None: not measured)."""
    out = []
    cuda = result["machine"]["gpu"] is not None
    if "flops" in result:
        r = result["flops"]["ratio_to_n1"]["n2_shared"]
        out.append(_target(f"FLOPs N=2 shared / N=1 ({result['flops']['arch']})", r,
                           "≈ 1.38 (paper)", abs(r - 1.38) < 0.02))
    rows = result.get("network", {}).get("rows", [])
    for row in rows:
        if row["mode"] != "n2_shared":
            continue
        tag = _row_tag(row)
        if not cuda:
            out.append(_target(f"N=2 shared / N=1, CPU, {tag}", row["ratio_to_n1"],
                               f"≤ {SHARED_OVER_N1_MAX}",
                               row["ratio_to_n1"] <= SHARED_OVER_N1_MAX))
        out.append(_target(f"N=2 separate / shared, {tag}", row["separate_over_shared"],
                           f"≥ {SEPARATE_OVER_SHARED_MIN}",
                           row["separate_over_shared"] >= SEPARATE_OVER_SHARED_MIN))
    for row in result.get("network", {}).get("crop_decode", []):
        out.append(_target(f"crop + decode / network per crop, batch {row['batch']}"
                           f"{', flip' if row['flip'] else ''}", row["fraction"],
                           f"< {CROP_DECODE_FRACTION_MAX}",
                           row["fraction"] < CROP_DECODE_FRACTION_MAX))
    if "pipeline" in result:
        p = result["pipeline"]
        out.append(_target("pipelined fps / slowest worker alone", p["pipelined_over_bound"],
                           f"≥ {PIPELINE_OVER_BOUND_MIN}",
                           p["pipelined_over_bound"] >= PIPELINE_OVER_BOUND_MIN,
                           f"slowest: {p['slowest_worker']}"))
    out.extend(_gpu_targets(result, cuda))
    return out


def _row_tag(row: dict[str, Any]) -> str:
    parts = [f"batch {row['batch']}", row["dtype"]]
    if row["flip"]:
        parts.append("flip")
    if row["layout"] == "channels_last":
        parts.append("channels_last")
    if row["compiled"]:
        parts.append("compiled")
    return ", ".join(parts)


def _gpu_targets(result: dict[str, Any], cuda: bool) -> list[dict[str, Any]]:
    name_net = "GPU: HRNet-W32 N=2 256×192 fp16 batch 64 crops/s"
    name_video = "GPU: video pipeline, Faster R-CNN, 1080p, ~10 people, frames/s"
    if not cuda:
        note = "not measured: no GPU (run benchmarks/speed.py --gpu-targets on one)"
        return [_target(name_net, None, f"≥ {GPU_CROPS_PER_S_MIN:.0f}", None, note),
                _target(name_video, None, f"≥ {GPU_VIDEO_FPS_MIN:.0f}", None, note)]
    out = []
    net = result.get("network")
    rows = [r for r in (net["rows"] if net else []) if r["mode"] == "n2_shared"
            and r["batch"] == 64 and r["dtype"] == "fp16" and not r["flip"]]
    if net and net["settings"]["arch"] == "hrnet_w32" and \
            tuple(net["settings"]["image_size"]) == (256, 192) and rows:
        best = max(rows, key=lambda r: r["crops_per_s"])
        out.append(_target(name_net, best["crops_per_s"], f"≥ {GPU_CROPS_PER_S_MIN:.0f}",
                           best["crops_per_s"] >= GPU_CROPS_PER_S_MIN,
                           f"without flip, best of {len(rows)} ({_row_tag(best)}, "
                           f"{best['layout']})"))
    else:
        out.append(_target(name_net, None, f"≥ {GPU_CROPS_PER_S_MIN:.0f}", None,
                           "not in this run's settings"))
    p = result.get("pipeline")
    if p and p["video"]["size"] == [1920, 1080] and (p["boxes"]["detector"] or "").startswith(
            "fasterrcnn_resnet50"):
        out.append(_target(name_video, p["pipelined_fps"], f"≥ {GPU_VIDEO_FPS_MIN:.0f}",
                           p["pipelined_fps"] >= GPU_VIDEO_FPS_MIN,
                           f"{p['video']['boxes_per_frame']:.1f} boxes/frame, detector weights "
                           f"{p['boxes']['detector_weights']}"))
    else:
        out.append(_target(name_video, None, f"≥ {GPU_VIDEO_FPS_MIN:.0f}", None,
                           "not in this run's settings"))
    return out


# ----------------------------------------------------------------------------- tables


def _f(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def network_table(net: dict[str, Any]) -> Table:
    s = net["settings"]
    table = Table(title=f"Pose network {s['arch']} {s['image_size'][0]}×{s['image_size'][1]} "
                        f"(medians of {s['repeats']} interleaved rounds)")
    for col in ("variant", "batch", "flip", "dtype", "layout", "compiled", "ms/call", "ms/crop",
                "crops/s", "GFLOP/s", "× N=1", "sep./shared", "spread"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in net["rows"]:
        table.add_row(
            MODE_LABELS[r["mode"]], str(r["batch"]), "yes" if r["flip"] else "no", r["dtype"],
            "NHWC" if r["layout"] == "channels_last" else "NCHW",
            "yes" if r["compiled"] else "no", _f(r["ms_per_call"], 1), _f(r["ms_per_crop"], 2),
            _f(r["crops_per_s"], 1), _f(r["gflop_per_s"], 0), _f(r["ratio_to_n1"], 3),
            _f(r["separate_over_shared"], 3) if "separate_over_shared" in r else "",
            f"±{100 * r['spread'] / 2:.0f}%")
    return table


def crop_decode_table(net: dict[str, Any]) -> Table:
    table = Table(title="Crop (warp_crops) + decode (decode_heatmaps → host) per crop, vs the "
                        "N=2 shared-trunk network")
    for col in ("batch", "flip", "crop ms/crop", "decode ms/crop", "network ms/crop",
                "fraction"):
        table.add_column(col, justify="right")
    for r in net["crop_decode"]:
        table.add_row(str(r["batch"]), "yes" if r["flip"] else "no",
                      _f(r["crop_ms_per_crop"], 3), _f(r["decode_ms_per_crop"], 3),
                      _f(r["network_ms_per_crop"], 2), f"{100 * r['fraction']:.1f} %")
    return table


def flops_table(flops: dict[str, Any]) -> Table:
    h, w = flops["image_size"]
    table = Table(title=f"FLOPs per crop, {flops['arch']} {h}×{w} (FlopCounterMode)")
    for col in ("variant", "GFLOPs", "× N=1"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for mode in MODES:
        table.add_row(MODE_LABELS[mode], _f(flops["gflops_per_crop"][mode], 2),
                      _f(flops["ratio_to_n1"][mode], 3))
    return table


def pipeline_table(p: dict[str, Any]) -> Table:
    v, b, s = p["video"], p["boxes"], p["settings"]
    detector = (f"detector {b['detector']} ({b['detector_weights']})" if b["detector"]
                else "no detector")
    table = Table(title=f"Video pipeline: {v['frames']} frames {v['size'][0]}×{v['size'][1]}, "
                        f"{v['boxes_per_frame']:.1f} boxes/frame from {b['boxes']}, {detector}; "
                        f"pose {s['arch']} N=2{' flip' if s['flip'] else ''}"
                        f"{' fp16' if s['half'] else ''}")
    table.add_column("stage")
    table.add_column("worker")
    table.add_column("ms/frame alone", justify="right")
    for worker, stages in WORKERS.items():
        for s in stages:
            table.add_row(s, worker, _f(p["stage_ms_per_frame"][s], 1))
    table.add_section()
    for worker, ms in p["worker_ms_per_frame"].items():
        table.add_row(f"[bold]{worker}[/]", "all", _f(ms, 1))
    table.add_section()
    mem = p["memory"]
    rows = [
        ("frames/s, stages one after another", _f(p["sequential_fps"], 2)),
        (f"frames/s bound (slowest worker: {p['slowest_worker']})", _f(p["bound_fps"], 2)),
        ("frames/s pipelined (annotate_video)", _f(p["pipelined_fps"], 2)),
        ("pipelined / bound", _f(p["pipelined_over_bound"], 3)),
        (f"peak RSS ({mem['rss_scope']})", f"{mem['peak_rss_mib']:.0f} MiB"),
    ]
    if "cuda_peak_allocated_mib" in mem:
        rows.append(("peak CUDA allocated", f"{mem['cuda_peak_allocated_mib']:.0f} MiB"))
    for k, val in rows:
        table.add_row(k, "", val)
    return table


def targets_table(targets: list[dict[str, Any]]) -> Table:
    table = Table(title="Targets")
    for col in ("target", "measured", "limit", "met", "note"):
        table.add_column(col, justify="right" if col == "measured" else "left")
    for t in targets:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[t["met"]]
        value = "" if t["measured"] is None else _f(t["measured"], 3)
        table.add_row(t["target"], value, t["limit"], met, t["note"])
    return table


def memory_table(mem: dict[str, Any]) -> Table:
    env = " ".join(f"{k}={v}" for k, v in mem["env"].items()) or "default allocator settings"
    table = Table(title=f"Pipeline peak memory vs video length (×{mem['factor']}), each run in "
                        f"a fresh process; {env}")
    for col in ("frames", "seconds", "RSS at start MiB", "peak RSS MiB", "peak CUDA MiB"):
        table.add_column(col, justify="right")
    for r in mem["runs"]:
        start = r.get("start_rss_mib")  # absent where /proc/self/status is not readable
        table.add_row(str(r["frames"]), _f(r["seconds"], 1),
                      _f(start, 0) if start is not None else "—",
                      _f(r["peak_rss_mib"], 0),
                      _f(r["cuda_peak_allocated_mib"], 0) if "cuda_peak_allocated_mib" in r
                      else "—")
    table.add_section()
    table.add_row("growth", "", "", _f(mem["rss_growth"], 3),
                  _f(mem["cuda_growth"], 3) if "cuda_growth" in mem else "—")
    return table


def result_tables(result: dict[str, Any]) -> list[Table]:
    """The rich tables of a `run_bench` result."""
    tables = []
    if "flops" in result:
        tables.append(flops_table(result["flops"]))
    if "network" in result:
        tables.append(network_table(result["network"]))
        if result["network"]["crop_decode"]:
            tables.append(crop_decode_table(result["network"]))
    if "pipeline" in result:
        tables.append(pipeline_table(result["pipeline"]))
    if "memory" in result:
        tables.append(memory_table(result["memory"]))
    if "targets" in result:
        tables.append(targets_table(result["targets"]))
    return tables


def markdown_report(result: dict[str, Any]) -> str:
    """The machine line and every table of a result as Markdown (for benchmarks/RESULTS.md)."""
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(f"Machine: {machine_line(result['machine'])}; measured "
                  f"{result['machine']['date']}.", highlight=False, soft_wrap=True)
    for table in result_tables(result):
        console.print(f"\n**{table.title}**\n", highlight=False, soft_wrap=True)
        table.title, table.box = None, box.MARKDOWN
        console.print(table)
    text = "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"


def write_reports(result: dict[str, Any], out: Path, markdown: Path | None,
                  console: Console) -> None:
    """Write a benchmark result as JSON and, optionally, as Markdown tables (both atomic)."""
    write_json(out, result, indent=1)
    console.print(f"wrote {out}")
    if markdown is not None:
        with atomic_path(markdown) as tmp:
            tmp.write_text(markdown_report(result), encoding="utf-8")
        console.print(f"wrote {markdown}")


__all__ = [
    "FLIP_CHOICES", "LAYOUT_CHOICES", "Clock", "NetworkSettings", "PipelineSettings", "Variant",
    "count_flops", "default_detector", "evaluate_targets", "machine_info", "machine_line",
    "markdown_report", "parse_size", "peak_rss_window", "pipeline_memory", "result_tables",
    "run_bench", "run_interleaved", "run_network", "run_pipeline", "torch_threads",
    "write_reports",
]

