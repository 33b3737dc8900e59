"""CPU speed of the converted real networks, measured side by side in one run.

1. Our PyTorch networks against the original files run by their own runtimes on the same
   input, calls interleaved round-robin, same thread count: YOLOX-Nano (ours vs onnxruntime on
   the published ONNX) and MoveNet Lightning (ours, float32, vs the published int8 TFLite under
   ai-edge-litert: not the same precision, said so). Ratio = their time / our time (> 1: ours
   faster; target >= 0.8).
   Then a profile of our YOLOX (share of time per op) beside onnxruntime's optimised graph.
2. One detector pass on a 768x576 frame against the pose stage of a frame with 6 people
   (MoveNet Thunder on 6 crops, flip test on, as `mipnet video` runs it).
3. `mipnet video`'s stages on the first frames of ../shared/realdata/video/vtest.avi with the
   defaults (YOLOX-Nano boxes >= 0.5, MoveNet Thunder, flip test), one stage after another, and
   the frames/s of the real pipelined `annotate_video` on the same frames.

Usage (from the repository root):
    python benchmarks/real_speed.py [--threads 2] [--frames 200] [--repeats 30]
Needs onnxruntime and ai-edge-litert (the dev extra). Writes benchmarks/real_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mipnet_cli.annotate.video import annotate_video  # noqa: E402
from mipnet_cli.bench import Clock, run_interleaved, run_sequential  # noqa: E402
from mipnet_cli.checkpoints.convert.movenet import movenet_from_tfjs  # noqa: E402
from mipnet_cli.checkpoints.convert.yolox import yolox_from_onnx  # noqa: E402
from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.detect.sources import DetectorBoxes  # noqa: E402
from mipnet_cli.detect.yolox import YoloxPersonDetector  # noqa: E402
from mipnet_cli.media.video import VideoOptions  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402

SRC = ROOT.parent / "shared" / "weights-src"
VIDEO = ROOT.parent / "shared" / "realdata" / "video" / "vtest.avi"
CPU = torch.device("cpu")


def first_frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(VIDEO))
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"{VIDEO}: cannot read a frame")
    return bgr


def ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def networks(threads: int, repeats: int) -> dict:
    import ai_edge_litert.interpreter as litert
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Its worker threads would otherwise spin after each call and slow the interleaved
    # PyTorch calls down.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    onnx_path = SRC / "detectors" / "yolox_nano_416x416.onnx"
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    # Ours as the product runs them on a CPU: NHWC activations.
    yolox = yolox_from_onnx(onnx_path).to(memory_format=torch.channels_last)
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 416, 416)).astype(np.float32)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    tfl = litert.Interpreter(
        model_path=str(SRC / "movenet" /
                       "lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"),
        num_threads=threads)
    tfl.allocate_tensors()
    tin, tout = tfl.get_input_details()[0], tfl.get_output_details()[0]
    lightning = movenet_from_tfjs(SRC / "movenet" / "movenet-lightning.json").to(
        memory_format=torch.channels_last)
    crop = cv2.resize(cv2.cvtColor(first_frame(), cv2.COLOR_BGR2RGB), (192, 192))
    crop_t = torch.from_numpy(crop).permute(2, 0, 1)[None].float().contiguous(
        memory_format=torch.channels_last)

    def run_tflite():
        tfl.set_tensor(tin["index"], crop[None].astype(tin["dtype"]))
        tfl.invoke()
        return tfl.get_tensor(tout["index"])

    with torch.inference_mode():
        times = run_interleaved({
            "yolox ours": lambda: yolox(xt),
            "yolox onnxruntime": lambda: session.run(None, {"images": x}),
            "lightning ours fp32": lambda: lightning(crop_t),
            "lightning tflite int8": run_tflite,
        }, repeats=repeats, warmup=3, clock=Clock(CPU))
    med = {k: round(ms(v), 2) for k, v in times.items()}
    return {"ms": med,
            "yolox ratio (onnxruntime / ours)": round(med["yolox onnxruntime"] /
                                                      med["yolox ours"], 3),
            "lightning ratio (tflite int8 / ours fp32)": round(
                med["lightning tflite int8"] / med["lightning ours fp32"], 3)}


def yolox_profile() -> dict:
    """Where our YOLOX spends its time (torch profiler, share of self time per op) and what
    onnxruntime makes of the graph (its optimised graph's op counts)."""
    import collections
    import os

    import onnxruntime as ort

    from mipnet_cli.checkpoints.convert.onnx_file import read_onnx

    path = SRC / "detectors" / "yolox_nano_416x416.onnx"
    model = yolox_from_onnx(path).to(memory_format=torch.channels_last)
    x = (torch.rand(1, 3, 416, 416) * 255).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        with torch.profiler.profile() as prof:
            for _ in range(10):
                model(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ours = {e.key: round(100 * e.self_cpu_time_total / total, 1)
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:5]}
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        optimized = read_onnx(opts.optimized_model_filepath)
    return {"ours_self_time_percent": ours,
            "onnxruntime_graph": {"nodes_before": len(read_onnx(path).nodes),
                                  "nodes_after": len(optimized.nodes),
                                  "ops": dict(collections.Counter(
                                      n.op for n in optimized.nodes).most_common(6))}}


def detector_vs_pose(repeats: int) -> dict:
    frame = cv2.cvtColor(first_frame(), cv2.COLOR_BGR2RGB)
    detector = YoloxPersonDetector.from_file(get_entry("yolox-nano-coco").local_path())
    est = PoseEstimator.from_checkpoint(get_entry("movenet-thunder-coco").local_path(),
                                        EngineOptions(flip_test=True), CPU)
    h, w = frame.shape[:2]
    boxes = np.array([[60 + 110 * i, 150, 70, 200] for i in range(6)], np.float64)
    index = np.zeros(6, np.int64)

    def pose():
        return est.estimate([frame], boxes, index)

    with torch.inference_mode():
        times = run_interleaved({"detect (1 frame)": lambda: detector.detect([frame]),
                                 "pose (6 people, flip)": pose}, repeats=repeats, warmup=3,
                                clock=Clock(CPU))
    med = {k: round(ms(v), 2) for k, v in times.items()}
    return {"ms": med, "frame": f"{w}x{h}",
            "pose / detect": round(med["pose (6 people, flip)"] / med["detect (1 frame)"], 3)}


def pipeline(frames: int) -> dict:
    detector = YoloxPersonDetector.from_file(get_entry("yolox-nano-coco").local_path())
    est = PoseEstimator.from_checkpoint(get_entry("movenet-thunder-coco").local_path(),
                                        EngineOptions(flip_test=True), CPU)
    source = DetectorBoxes(detector)
    with tempfile.TemporaryDirectory() as tmp:
        seconds, done, boxes = run_sequential(VIDEO, est, source, Path(tmp) / "seq.mp4",
                                           batch_frames=8, clock=Clock(CPU), max_frames=frames)
        start = time.perf_counter()
        summary = annotate_video(VIDEO, est, source, VideoOptions(max_frames=frames),
                                 out=Path(tmp) / "out.mp4")
        wall = time.perf_counter() - start
    total = sum(seconds.values())
    return {"frames": done, "boxes_per_frame": round(boxes / max(done, 1), 2),
            "stage_ms_per_frame": {k: round(1000 * v / done, 2) for k, v in seconds.items()},
            "sequential_fps": round(done / total, 2),
            "pipelined_fps (mipnet video)": round(summary.frames / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "real_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"machine": cpu_model(), "threads": args.threads, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d")}
    result["networks"] = networks(args.threads, args.repeats)
    print(result["networks"], flush=True)
    result["yolox_profile"] = yolox_profile()
    print(result["yolox_profile"], flush=True)
    result["detector_vs_pose"] = detector_vs_pose(args.repeats)
    print(result["detector_vs_pose"], flush=True)
    result["pipeline"] = pipeline(args.frames)
    print(result["pipeline"], flush=True)
    write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
