"""Speed and memory measurements: the pose network's variants, crop + decode, and the video
pipeline, all measured in one process.

- **network** (`network.py`): per-crop latency and throughput of N=1 (single-instance network),
  N=2 as two separate passes (`model(x, lam)` per λ, what the official evaluation does) and N=2
  with the shared trunk (`model.forward_multi`), with or without flip test, in
  fp32/fp16/bf16, contiguous or channels_last, eager or `torch.compile`d. Every variant runs
  once per round, round-robin (the starting variant rotates), after warm-up; a variant's time
  is the median over rounds and its ratio to N=1 is the median of the per-round ratios, so that
  load changes between rounds (other processes on the machine) cancel out.
- **crop + decode**: the batched on-device crop (`warp_crops`) and heatmap decode
  (`decode_heatmaps` + copy to the host) per crop, timed in the same rounds, as a fraction of
  the N=2 shared-trunk network's time per crop.
- **pipeline** (`pipeline.py`): a video through `annotate.video.annotate_video` (decode,
  detect, crop, pose, merge, render, encode in three threads), against the same stages run
  one after another on the same frames; peak memory (`memory.py`: RSS, and CUDA allocations
  on a GPU).

`timing.py` holds the clock and the interleaved rounds, `machine.py` the machine facts,
`flops.py` the FLOP counts and `report.py` the run, its targets and its tables. CUDA timings
use events after a synchronize; CPU timings use `time.perf_counter`.
"""

from .common import (
    CPU_DETECTOR,
    DTYPES,
    FLIP_CHOICES,
    LAYOUT_CHOICES,
    LAYOUTS,
    MODES,
    default_detector,
    parse_size,
)
from .flops import count_flops
from .machine import machine_info, machine_line
from .memory import _memory_child, pipeline_memory
from .network import NetworkSettings, Variant, run_network
from .pipeline import (
    STAGES,
    WORKERS,
    PipelineSettings,
    _box_source,
    _resolve_detector_weights,
    make_synthetic_video,
    run_pipeline,
    run_sequential,
)
from .report import (
    evaluate_targets,
    markdown_report,
    memory_table,
    result_tables,
    run_bench,
    write_reports,
)
from .timing import Clock, peak_rss_window, run_interleaved, torch_threads

__all__ = [
    "CPU_DETECTOR", "DTYPES", "FLIP_CHOICES", "LAYOUTS", "LAYOUT_CHOICES", "MODES", "STAGES",
    "WORKERS", "Clock", "NetworkSettings", "PipelineSettings", "Variant", "_box_source",
    "_memory_child", "_resolve_detector_weights", "count_flops", "default_detector",
    "evaluate_targets", "machine_info", "machine_line", "make_synthetic_video",
    "markdown_report", "memory_table", "parse_size", "peak_rss_window", "pipeline_memory",
    "result_tables", "run_bench", "run_interleaved", "run_network", "run_pipeline",
    "run_sequential", "torch_threads", "write_reports",
]
