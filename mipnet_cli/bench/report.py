"""The whole benchmark run, its targets, and its tables (terminal and Markdown) and JSON."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..core.files import atomic_path, write_json
from .common import (
    CROP_DECODE_FRACTION_MAX,
    GPU_CROPS_PER_S_MIN,
    GPU_VIDEO_FPS_MIN,
    MODE_LABELS,
    MODES,
    PIPELINE_OVER_BOUND_MIN,
    SEPARATE_OVER_SHARED_MIN,
    SHARED_OVER_N1_MAX,
    Progress,
)
from .flops import count_flops
from .machine import machine_info, machine_line
from .network import NetworkSettings, run_network
from .pipeline import WORKERS, PipelineSettings, run_pipeline
from .timing import torch_threads


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
                        f"{' half precision' if s['half'] else ''}")
    table.add_column("stage")
    table.add_column("worker")
    table.add_column("ms/frame alone", justify="right")
    for worker, stages in WORKERS.items():
        for s in stages:
            table.add_row(s, worker, _f(p["stage_ms_per_frame"][s], 1))
    table.add_section()
    for worker, ms in p["worker_ms_per_frame"].items():
        table.add_row(Text(worker, style="bold"), "all", _f(ms, 1))
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
        met = {True: Text("yes", style="green"), False: Text("no", style="red"),
               None: "—"}[t["met"]]
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
