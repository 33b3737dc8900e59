"""Measuring: one call's time (CUDA events or perf_counter), interleaved rounds, medians,
threads, and a block's peak memory."""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.errors import MipnetError
from .common import Progress


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
