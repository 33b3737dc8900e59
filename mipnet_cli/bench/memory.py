"""Peak memory (RSS, CUDA) of the pipeline, short against long input, in fresh processes."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .pipeline import (
    PipelineSettings,
    _box_source,
    _pipelined,
    build_estimator,
    make_synthetic_video,
)
from .timing import Clock

# ----------------------------------------------------------------------------- FLOPs



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
