"""The pose network's variants (N=1, N=2 separate, N=2 shared trunk; flip, dtype, layout,
compile) and crop + decode, per crop."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..core.errors import MipnetError
from ..core.geometry import box_to_center_scale, warp_crops
from ..core.keypoints import COCO17
from ..models import build_model, instance_lambdas
from ..models.decode import decode_heatmaps, flip_average
from .common import DTYPES, LAYOUTS, MODES, Progress
from .flops import count_flops
from .timing import Clock, _iqr_fraction, _median, _paired_ratio, run_interleaved


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
