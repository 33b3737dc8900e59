"""The speed benchmark's machinery: structure and sanity of what it reports (never timings)."""

from __future__ import annotations

import json
import runpy
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from mipnet_cli import bench
from mipnet_cli.cli import run_app
from mipnet_cli.core.errors import MipnetError
from mipnet_cli.detect.person_rcnn import SMALL_PERSON_DETECTOR

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def test_interleaved_rounds_rotate_and_count() -> None:
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = bench.run_interleaved(fns, repeats=3, warmup=1, clock=bench.Clock(CPU))
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # the first one rotates


@pytest.fixture(scope="module")
def w32_flops() -> dict:
    return bench.count_flops("hrnet_w32")


def test_flops_match_the_paper_ratio(w32_flops: dict) -> None:
    flops = w32_flops
    assert flops["image_size"] == [256, 192]
    ratios = flops["ratio_to_n1"]
    assert ratios["n2_separate"] == pytest.approx(2.0, abs=1e-3)
    assert ratios["n2_shared"] == pytest.approx(1.38, abs=0.02)  # MIPNet-W32: +38 % FLOPs


def test_network_rows_and_crop_decode() -> None:
    settings = bench.NetworkSettings(arch="hrnet_w8_tiny", batches=(2,), flips=(False, True),
                                     repeats=1, warmup=0, frame_size=(120, 160),
                                     people_per_frame=1)
    net = bench.run_network(settings, CPU)
    rows = net["rows"]
    assert [(r["mode"], r["flip"]) for r in rows] == [
        (m, f) for f in (False, True) for m in bench.MODES]
    for r in rows:
        assert r["ms_per_call"] > 0 and r["crops_per_s"] > 0
        assert r["ms_per_crop"] == pytest.approx(r["ms_per_call"] / 2)
        assert ("separate_over_shared" in r) == (r["mode"] == "n2_shared")
        if r["mode"] == "n1":
            assert r["ratio_to_n1"] == 1.0
    assert [(c["batch"], c["flip"]) for c in net["crop_decode"]] == [(2, False), (2, True)]
    assert all(c["fraction"] > 0 and c["crop_ms_per_crop"] > 0 for c in net["crop_decode"])
    assert len(net["samples_s"]) == 6 + 2  # network variants, crop and decode


def test_settings_are_checked() -> None:
    with pytest.raises(MipnetError, match="fp16"):
        bench.NetworkSettings(dtypes=("fp16",)).validate(CPU)
    with pytest.raises(MipnetError, match="layouts"):
        bench.NetworkSettings(layouts=("nhwc",)).validate(CPU)
    with pytest.raises(MipnetError, match="WIDTHxHEIGHT"):
        bench.parse_size("1080p")


def _tiny_pipeline(**kw) -> bench.PipelineSettings:
    base = dict(arch="hrnet_w8_tiny", frames=2, width=160, height=128, people=2,
                batch_frames=2, flip=False)
    return bench.PipelineSettings(**(base | kw))


def test_pipeline_reports_stages_rates_and_memory() -> None:
    p = bench.run_pipeline(_tiny_pipeline(detector=None), CPU)
    assert (p["video"]["frames"], p["video"]["size"]) == (2, [160, 128])
    assert p["video"]["synthetic"] and p["video"]["boxes_per_frame"] > 0
    assert p["boxes"] == {"detector": None, "boxes": "gt"}
    assert set(p["stage_ms_per_frame"]) == set(bench.STAGES)
    assert p["stage_ms_per_frame"]["detect"] >= 0 and p["stage_ms_per_frame"]["pose"] > 0
    assert p["slowest_worker"] in bench.WORKERS
    assert p["pipelined_fps"] > 0 and p["bound_fps"] > 0
    assert p["pipelined_over_bound"] == pytest.approx(p["pipelined_fps"] / p["bound_fps"])
    assert p["memory"]["peak_rss_mib"] > 0


def test_a_random_init_detector_runs_but_hands_on_ground_truth_boxes(tmp_path: Path) -> None:
    settings = _tiny_pipeline(detector=SMALL_PERSON_DETECTOR, detector_weights=None, frames=1)
    video = bench.make_synthetic_video(tmp_path / "v.mp4", settings)
    source, desc = bench._box_source(settings, video, CPU)
    assert desc["boxes"] == "gt" and desc["detector_weights"] == "random init"
    frame = np.zeros((128, 160, 3), np.uint8)
    boxes = source.boxes([frame], [1])
    assert len(boxes) == 1 and len(boxes[0]) == 2 and boxes[0][0].source == "gt"


def test_pipeline_with_the_shipped_detector_uses_its_boxes() -> None:
    p = bench.run_pipeline(_tiny_pipeline(detector=bench.CPU_DETECTOR, frames=1), CPU)
    assert p["boxes"]["boxes"] == "detector"
    assert p["boxes"]["detector_weights"].endswith(".safetensors")


def test_targets_say_what_was_not_measured(w32_flops: dict) -> None:
    result = {"machine": bench.machine_info(CPU), "flops": w32_flops}
    targets = bench.evaluate_targets(result)
    assert targets[0]["met"] is True  # the FLOP ratio
    gpu = [t for t in targets if t["target"].startswith("GPU")]
    assert len(gpu) == 2
    assert all(t["met"] is None and t["note"].startswith("not measured: no GPU") for t in gpu)
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["cpu_cores"]
    assert bench.result_tables(result | {"targets": targets})


def test_gpu_targets_read_the_named_settings() -> None:
    """The GPU branch of the targets, on a made-up GPU result (no GPU is needed)."""
    row = {"mode": "n2_shared", "batch": 64, "dtype": "fp16", "flip": False, "layout":
           "channels_last", "compiled": False, "crops_per_s": 3500.0, "ratio_to_n1": 1.3,
           "separate_over_shared": 1.5}
    result = {
        "machine": {"gpu": {"name": "made up"}},
        "network": {"settings": {"arch": "hrnet_w32", "image_size": [256, 192]}, "rows": [row],
                    "crop_decode": []},
        "pipeline": {"video": {"size": [1920, 1080], "boxes_per_frame": 10.0},
                     "boxes": {"detector": "fasterrcnn_resnet50_fpn_v2",
                               "detector_weights": "random init"},
                     "pipelined_fps": 20.0, "pipelined_over_bound": 0.9,
                     "slowest_worker": "model"},
    }
    gpu = {t["target"]: t for t in bench.evaluate_targets(result) if t["target"].startswith("GPU")}
    net, video = gpu.values()
    assert (net["measured"], net["met"]) == (3500.0, True)
    assert (video["measured"], video["met"]) == (20.0, False)
    assert not any("CPU" in t["target"] for t in bench.evaluate_targets(result))


def test_peak_rss_window() -> None:
    with bench.peak_rss_window() as mem:
        block = bytearray(32 * 2**20)
        block[::4096] = b"x" * len(block[::4096])
    assert mem["peak_rss_mib"] > 32
    assert mem["rss_scope"] in ("this run", "process lifetime")


def test_memory_child_reports_its_peak(tmp_path: Path) -> None:
    settings = _tiny_pipeline(detector=None, frames=1)
    video = bench.make_synthetic_video(tmp_path / "v.mp4", settings, frames=3)
    run = bench._memory_child(asdict(settings), str(video), "cpu", 2)  # the first 2 frames
    assert run["frames_done"] == 2 and run["seconds"] > 0
    assert run["peak_rss_mib"] >= run["start_rss_mib"] > 0


def test_memory_runs_both_lengths_of_one_video_in_fresh_processes() -> None:
    mem = bench.pipeline_memory(_tiny_pipeline(detector=None, frames=1), CPU, factor=2)
    assert [r["frames"] for r in mem["runs"]] == [1, 2]
    assert [r["frames_done"] for r in mem["runs"]] == [1, 2]  # the short run stops early
    assert all(r["peak_rss_mib"] >= r["start_rss_mib"] > 0 for r in mem["runs"])
    assert mem["rss_growth"] == mem["runs"][1]["peak_rss_mib"] / mem["runs"][0]["peak_rss_mib"]


def test_cli_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = run_app(["bench", "--arch", "hrnet_w8_tiny", "--batch", "1", "--repeats", "1",
                    "--warmup", "0", "--no-pipeline", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "flops", "network", "targets"}
    assert len(result["network"]["rows"]) == 3
    assert run_app(["bench", "--flip", "sometimes", "--json", str(out)]) == 2


def test_gpu_targets_refuse_to_run_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["speed.py", "--gpu-targets", "--device", "cpu"])
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        runpy.run_path(str(ROOT / "benchmarks" / "speed.py"), run_name="__main__")
