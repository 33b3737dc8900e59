"""Occlusion benchmark: does the multi-instance network (N=2) recover people that a
single-instance network (N=1) loses?

Same architecture, data and training budget for N=1 and N=2 (configs/demo_synth_n{1,2}.toml),
trained on synthetic crowds (`mipnet synth`, seed 1) and evaluated on a held-out synthetic split
made with another seed (seed 2):

- GT boxes: every annotated person has a box;
- box dropout: of every pair of people whose boxes overlap (IoU > 0.5) only the front person's
  box is kept — the back person can only be found through the secondary instance (λ = [0, 1]).

- detector boxes: the shipped synthetic person detector
  (`weights/detector_synth_person.safetensors`, trained with configs/detector_synth.toml on the
  same training split), every box scoring at
  least 0.05, and the detector-confidence sweep of the paper's Fig. 5 (AP when boxes below each
  threshold are dropped).

Usage (from the repository root):
    python benchmarks/occlusion.py                  # generate data if missing, train, evaluate
    python benchmarks/occlusion.py --skip-train     # evaluate the runs/demo_synth_n{1,2} models
Writes benchmarks/occlusion.json, benchmarks/occlusion.png (AP per condition) and
benchmarks/occlusion_sweep.png (AP against detector confidence), and prints a table; paste the
table into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import atomic_path, write_json  # noqa: E402
from mipnet_cli.data import KeypointDataset  # noqa: E402
from mipnet_cli.detect.registry import open_detector  # noqa: E402
from mipnet_cli.evaluate.predictions import confidence_sweep, evaluate_predictions, predict_dataset  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402
from mipnet_cli.train.detector import detect_dataset  # noqa: E402

DATA = ROOT / "data" / "synth"
METRICS = ("AP", "AP50", "AP75", "AR")


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def make_data(train_images: int, val_images: int) -> None:
    for split, seed, n in (("train", 1, train_images), ("val", 2, val_images)):
        if not (DATA / split / "annotations.json").is_file():
            run(["mipnet", "synth", str(DATA / split), "-n", str(n), "--seed", str(seed),
                 "--width", "320", "--height", "256", "--overlap", "0.6"])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def dropout_boxes(ann_file: Path, out: Path) -> dict:
    """A detection file with GT boxes, minus the back person of every overlapping pair.

    'Back' is the person with fewer visible (v=2) keypoints. Returns counts.
    """
    data = json.loads(ann_file.read_text())
    people: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0):
            people.setdefault(a["image_id"], []).append(a)
    dets, dropped = [], 0
    for image_id, anns in people.items():
        gone: set[int] = set()
        for i, a in enumerate(anns):
            for b in anns[i + 1:]:
                if iou(np.array(a["bbox"]), np.array(b["bbox"])) > 0.5:
                    va = sum(v == 2 for v in a["keypoints"][2::3])
                    vb = sum(v == 2 for v in b["keypoints"][2::3])
                    gone.add(a["id"] if va < vb else b["id"])
        dropped += len(gone)
        dets += [{"image_id": image_id, "category_id": 1, "bbox": a["bbox"], "score": 1.0}
                 for a in anns if a["id"] not in gone]
    write_json(out, dets)
    return {"boxes": len(dets), "dropped": dropped}


def detector_boxes(ann_file: Path, images: Path, out: Path, score_thresh: float = 0.05) -> dict:
    """A detection file from the shipped synthetic person detector. Returns counts."""
    entry = get_entry("detector-synth-person")
    path = entry.local_path()
    if path is None:
        raise SystemExit("the shipped detector (weights/detector_synth_person.safetensors) is "
                         "missing")
    detector = open_detector(entry.builder, path, score_thresh=score_thresh, device="cpu")
    _, dets = detect_dataset(detector, ann_file, images)
    write_json(out, dets)
    return {"boxes": len(dets), "score_thresh": score_thresh, "detector": entry.name}


def evaluate(weights: Path, boxes: Path | None, sweep: bool = False) -> dict:
    """Merged and per-instance metrics; with `sweep`, AP at each detector-confidence threshold."""
    est = PoseEstimator.from_checkpoint(weights, EngineOptions(flip_test=True), device="cpu")
    h, w = est.input_size
    ds = KeypointDataset(DATA / "val" / "annotations.json", DATA / "val" / "images",
                         est.keypoint_set, image_size=(h, w), heatmap_size=(h // 4, w // 4),
                         num_instances=1, train=False, boxes=boxes)
    preds = predict_dataset(est, ds, batch_size=64)
    metrics = evaluate_predictions(preds, est, ds)
    out = {k: {m: v[m] for m in METRICS} for k, v in metrics.items()}
    if sweep:
        out["sweep"] = [{"threshold": t, **{m: v[m] for m in METRICS}}
                        for t, v in confidence_sweep(preds, est, ds)]
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    width = 0.38
    for i, (label, per_cond) in enumerate(results.items()):
        aps = [per_cond[c]["merged"]["AP"] for c in conditions]
        bars = ax.bar(np.arange(len(conditions)) + (i - 0.5) * width, aps, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(np.arange(len(conditions)), conditions)
    ax.set_ylabel("AP (held-out synthetic split)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("N=1 vs N=2, same architecture, data and budget")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot_sweep(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, per_cond in results.items():
        sweep = per_cond["detector boxes"]["sweep"]
        ax.plot([r["threshold"] for r in sweep], [r["AP"] for r in sweep], "o-", label=label)
    ax.set_xlabel("detector confidence threshold")
    ax.set_ylabel("AP (held-out synthetic split)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("AP as low-confidence boxes are dropped (cf. paper Fig. 5)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=200)
    args = parser.parse_args()
    make_data(args.train_images, args.val_images)
    runs = {"N=1": ROOT / "runs" / "demo_synth_n1", "N=2": ROOT / "runs" / "demo_synth_n2"}
    if not args.skip_train:
        for label, run_dir in runs.items():
            run(["mipnet", "train", f"configs/demo_synth_n{label[-1]}.toml", "--out", str(run_dir)])
    dropout = DATA / "val" / "dropout_boxes.json"
    counts = dropout_boxes(DATA / "val" / "annotations.json", dropout)
    detected = DATA / "val" / "detector_boxes.json"
    det_counts = detector_boxes(DATA / "val" / "annotations.json", DATA / "val" / "images",
                                detected)
    results: dict = {}
    start = time.perf_counter()
    for label, run_dir in runs.items():
        weights = run_dir / "best.safetensors"
        results[label] = {"GT boxes": evaluate(weights, None),
                          "box dropout": evaluate(weights, dropout),
                          "detector boxes": evaluate(weights, detected, sweep=True)}
    print(f"box dropout: kept {counts['boxes']} boxes, dropped {counts['dropped']}; "
          f"detector: {det_counts['boxes']} boxes scoring >= {det_counts['score_thresh']}")
    print(f"{'':6} {'condition':15} " + " ".join(f"{m:>6}" for m in METRICS)
          + "   AP λ0-only  AP λ1-only")
    for label, per_cond in results.items():
        for cond, m in per_cond.items():
            inst = (f"   {m['instance0']['AP']:.3f}      {m['instance1']['AP']:.3f}"
                    if "instance1" in m else "")
            print(f"{label:6} {cond:15} " + " ".join(f"{m['merged'][k]:6.3f}" for k in METRICS)
                  + inst)
    print("detector-confidence sweep (AP):")
    thresholds = [r["threshold"] for r in results["N=1"]["detector boxes"]["sweep"]]
    print(f"{'':6} " + " ".join(f"{t:>6.1f}" for t in thresholds))
    for label, per_cond in results.items():
        print(f"{label:6} " + " ".join(f"{r['AP']:6.3f}"
                                       for r in per_cond["detector boxes"]["sweep"]))
    report = {"results": results, "dropout": counts, "detector": det_counts,
              "eval_seconds": round(time.perf_counter() - start, 1)}
    write_json(ROOT / "benchmarks" / "occlusion.json", report, indent=1)
    plot(results, ROOT / "benchmarks" / "occlusion.png")
    plot_sweep(results, ROOT / "benchmarks" / "occlusion_sweep.png")


if __name__ == "__main__":
    main()
