"""MoveNet MultiPose as the detector-free family and as crowd recovery for top-down, measured.

1. **Whole image alone**: AP of the converted MultiPose (our decoding) on every real set and
   the held-out composites, at several input sizes (letterbox side): as published (no flip
   test, six people, small images enlarged to the input), then with 20 people and small images
   left at their own scale, then with the flip test as well (the shipped settings); seconds
   per image.
2. **Crowd recovery**: the top-down default (MoveNet Thunder) alone and merged with the
   whole-image poses (scores × factor, OKS-NMS), with ground-truth boxes, ground-truth boxes
   with one box of each overlapping pair removed ("dropout"), and YOLOX-Nano boxes at
   confidence thresholds 0.0-0.9. The top-down crops run once per box; each box set is a
   selection of rows merged by the engine, so every row is exactly what `predict` returns.
3. **Time**: the extra whole-image pass per frame against the top-down pass, and whole image
   against top-down as the number of people grows (1, 5, 10, 20; composites of real people).

Usage (from the repository root; the composites come from the command in
configs/real_movenet_n2.toml):
    python benchmarks/multipose.py [--sizes 256 384 512] [--timing-images 10]
Writes benchmarks/multipose.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from pfs_vs_top_down import crowd_sets, images_of  # noqa: E402
from real_networks import SETS as REAL_SETS  # noqa: E402
from real_networks import crowdpose_as_coco17  # noqa: E402

from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.core.results import Box, whole_image_boxes  # noqa: E402
from mipnet_cli.detect.boxes import load_gt_boxes  # noqa: E402
from mipnet_cli.detect.registry import open_detector  # noqa: E402
from mipnet_cli.evaluate.predictions import score_results  # noqa: E402
from mipnet_cli.media.images import read_image  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402
from mipnet_cli.pose.merge import recover_poses  # noqa: E402

COMPOSITES = ROOT / "data" / "real_composites" / "val"
SETS = {**REAL_SETS, "composites": (COMPOSITES / "annotations.json", COMPOSITES / "images")}
KEYS = ("AP", "AP50", "AP75", "AR")
THRESHOLDS = (0.05, 0.1, 0.3, 0.5, 0.7, 0.9)  # 0.05: the lowest `mipnet eval` keeps
MULTIPOSE = "movenet-multipose-coco"
TOP_DOWN = "movenet-thunder-coco"


def results_of(ids: list[int], poses: list[list]) -> list[dict]:
    return [{"image_id": i, "category_id": 1, "score": float(p.score),
             "keypoints": [float(v) for v in p.keypoints.reshape(-1)]}
            for i, per_image in zip(ids, poses, strict=True) for p in per_image]


def metrics(ann: Path, ids: list[int], poses: list[list], kps) -> dict:
    m = score_results(str(ann), results_of(ids, poses), kps)
    return {k: round(float(m[k]), 4) for k in KEYS}


def whole_image(est: PoseEstimator, images: list[np.ndarray]) -> tuple[list[list], float]:
    """Poses of every image, and the seconds per image."""
    start = time.perf_counter()
    poses = [est.predict([img], whole_image_boxes([img]))[0] for img in images]
    return poses, (time.perf_counter() - start) / max(len(images), 1)


def dropout(boxes: list[Box], iou: float = 0.3) -> list[Box]:
    """One box of each overlapping pair removed (the smaller one): the boxes a detector
    misses when two people overlap."""
    gone: set[int] = set()
    xyxy = np.array([b.xyxy for b in boxes], np.float64).reshape(-1, 4)
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if i in gone or j in gone:
                continue
            w = min(xyxy[i, 2], xyxy[j, 2]) - max(xyxy[i, 0], xyxy[j, 0])
            h = min(xyxy[i, 3], xyxy[j, 3]) - max(xyxy[i, 1], xyxy[j, 1])
            inter = max(w, 0) * max(h, 0)
            if inter / (area[i] + area[j] - inter) >= iou:
                gone.add(j if area[j] <= area[i] else i)
    return [b for k, b in enumerate(boxes) if k not in gone]


class TopDown:
    """Top-down poses of one image for any subset of its boxes, the crops run once."""

    def __init__(self, est: PoseEstimator, image: np.ndarray, boxes: list[Box]) -> None:
        self.est, self.boxes = est, boxes
        self.crops = (est.estimate([image], np.array([b.xywh for b in boxes]),
                                   np.zeros(len(boxes), np.int64)) if boxes else None)

    def poses(self, keep) -> list:
        rows = np.array([k for k, b in enumerate(self.boxes) if keep(b)], np.int64)
        return self.est.merge(self.crops, self.boxes, rows) if len(rows) else []


def recovery_table(ann: Path, ids: list[int], tops: dict[str, list[list]],
                   whole: list[list], kps, factor: float, oks: float) -> dict:
    out = {}
    for label, poses in tops.items():
        merged = [recover_poses(t, w, factor, oks, kps.sigmas_array)
                  for t, w in zip(poses, whole, strict=True)]
        out[label] = {"top-down": metrics(ann, ids, poses, kps),
                      "merged": metrics(ann, ids, merged, kps)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--recover-size", type=int, default=384,
                        help="whole-image input size of the recovery pass")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5])
    parser.add_argument("--oks", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("--timing-images", type=int, default=10)
    parser.add_argument("--parts", nargs="+", choices=("whole", "recovery", "time"),
                        default=["whole", "recovery", "time"],
                        help="what to measure (the others are kept from --json)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "multipose.json")
    args = parser.parse_args()
    report: dict = {"whole_image": {}, "recovery": {}}
    if args.json.is_file() and len(args.parts) < 3:
        report = json.loads(args.json.read_text())
    report |= {"machine": cpu_model(), "threads": torch.get_num_threads(),
               "load_at_start": [round(v, 2) for v in os.getloadavg()]}
    mp_path = get_entry(MULTIPOSE).local_path()
    top = PoseEstimator.from_checkpoint(get_entry(TOP_DOWN).local_path(),
                                        EngineOptions(flip_test=True), "cpu")
    detector = open_detector("yolox_nano", get_entry("yolox-nano-coco").local_path(),
                             score_thresh=THRESHOLDS[0], device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        for name, (ann, folder) in SETS.items():
            if not ann.is_file():
                print(f"skipped {name}: {ann} not found", flush=True)
                continue
            if name == "crowdpose":
                ann = crowdpose_as_coco17(ann, Path(tmp) / "crowdpose_coco17.json")
            items = images_of(ann, folder)
            sets[name] = (ann, [i for i, _ in items], [read_image(p) for _, p in items])
        # 1. Whole image alone.
        variants = {  # label -> (flip, max people, enlarge small images)
            "as published (no flip, 6 people, enlarged)": (False, 6, True),
            "20 people, not enlarged": (False, 20, False),
            "20 people, not enlarged, flip (shipped)": (True, 20, False),
        }
        for name, (ann, ids, images) in sets.items() if "whole" in args.parts else ():
            row = {}
            for size in args.sizes:
                for variant, (flip, people, enlarge) in variants.items():
                    est = PoseEstimator.from_checkpoint(
                        mp_path, EngineOptions(flip_test=flip, input_size=size,
                                               max_people=people), "cpu")
                    est.model.upscale = enlarge
                    poses, secs = whole_image(est, images)
                    label = f"{size}: {variant}"
                    row[label] = metrics(ann, ids, poses, top.keypoint_set) | {
                        "s_per_image": round(secs, 4)}
                    print(name, label, json.dumps(row[label]), flush=True)
            report["whole_image"][name] = row
            write_json(args.json, report, indent=1)
        # 2. Crowd recovery.
        rec = PoseEstimator.from_checkpoint(
            mp_path, EngineOptions(flip_test=True, input_size=args.recover_size), "cpu")
        report["recovery_settings"] = {"top_down": TOP_DOWN, "whole_image": MULTIPOSE,
                                       "input_size": args.recover_size, "flip": True,
                                       "detector": "yolox-nano-coco (416)"}
        for name, (ann, ids, images) in sets.items() if "recovery" in args.parts else ():
            gt = load_gt_boxes(ann)
            whole, _ = whole_image(rec, images)
            tops: dict[str, list[list]] = {}
            gt_runs, det_runs = [], []
            for image_id, image in zip(ids, images, strict=True):
                boxes = gt.get(image_id, [])
                kept = {id(b) for b in dropout(boxes)}
                gt_runs.append((TopDown(top, image, boxes), kept))
                det_runs.append(TopDown(top, image, detector.detect([image])[0]))
            tops["GT boxes"] = [r.poses(lambda b: True) for r, _ in gt_runs]
            tops["GT boxes, dropout"] = [r.poses(lambda b, k=k: id(b) in k)
                                         for r, k in gt_runs]
            for t in THRESHOLDS:
                tops[f"detector >= {t:g}"] = [r.poses(lambda b, t=t: b.score >= t)
                                                for r in det_runs]
            table = {}
            for factor in args.factors:
                for oks in args.oks:
                    label = f"factor {factor:g}, OKS {oks:g}"
                    table[label] = recovery_table(ann, ids, tops, whole, top.keypoint_set,
                                                  factor, oks)
                    print(name, label, json.dumps(table[label]), flush=True)
            table["whole image alone"] = metrics(ann, ids, whole, top.keypoint_set)
            report["recovery"][name] = table
            write_json(args.json, report, indent=1)
        # 3. Time.
        if "time" in args.parts and args.timing_images > 0:
            timing = {}
            for n, dest in crowd_sets(Path(tmp) / "crowds", args.timing_images).items():
                ann = dest / "annotations.json"
                items = images_of(ann, dest / "images")
                images = [read_image(p) for _, p in items]
                gt = load_gt_boxes(ann)
                _, t_whole = whole_image(rec, images)
                start = time.perf_counter()
                for image in images:
                    top.predict([image], [detector.detect([image])[0]])
                t_top = (time.perf_counter() - start) / len(images)
                boxes = sum(len(gt.get(i, [])) for i, _ in items) / len(items)
                timing[str(n)] = {"annotated_people_per_image": round(boxes, 1),
                                  "whole_image_s": round(t_whole, 4),
                                  "top_down_s": round(t_top, 4),
                                  "top_down_over_whole_image": round(t_top / t_whole, 2),
                                  "recovery_adds": round(t_whole / t_top, 2)}
                print("people", n, json.dumps(timing[str(n)]), flush=True)
            report["time_vs_people"] = timing
    write_json(args.json, report, indent=1)


if __name__ == "__main__":
    main()
