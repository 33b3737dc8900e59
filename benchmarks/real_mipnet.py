"""MIPNet on real people: the converted MoveNet fine-tuned as N=1 and as N=2 (same data, same
budget: configs/real_movenet_n{1,2}.toml) against each other and against the converted network
as published.

- Held-out composites (`data/real_composites/val`, people never seen in training): GT boxes,
  box dropout (of each pair of boxes with IoU > 0.5, the one with fewer visible joints is
  removed: its person can only come back through λ = [0, 1]) and YOLOX-Nano's boxes; merged
  and per-instance AP.
- Real photos: the OCHuman sample and coco_mini, GT boxes.
- λ = [0, 1] hits: for every GT box whose person overlaps another (box IoU > 0.3), whether
  the secondary instance's pose matches one of the overlapping people (OKS > 0.5).

Usage (from the repository root, after training both configs):
    python benchmarks/real_mipnet.py [--n1 runs/real_movenet_n1/best.safetensors]
                                     [--n2 runs/real_movenet_n2/best.safetensors]
Writes benchmarks/real_mipnet.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from occlusion import dropout_boxes, iou  # noqa: E402

from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.core.keypoints import COCO17  # noqa: E402
from mipnet_cli.data import KeypointDataset  # noqa: E402
from mipnet_cli.detect.registry import open_detector  # noqa: E402
from mipnet_cli.evaluate.predictions import evaluate_predictions, predict_dataset  # noqa: E402
from mipnet_cli.media.images import read_image  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402
from mipnet_cli.train.detector import detect_dataset  # noqa: E402

REAL = ROOT.parent / "shared" / "realdata"
COMPOSITES = ROOT / "data" / "real_composites" / "val"
SETS = {
    "composites": (COMPOSITES / "annotations.json", COMPOSITES / "images"),
    "ochuman": (REAL / "mmpose_tests/ochuman/test_ochuman.json", REAL / "mmpose_tests/ochuman"),
    "coco_mini": (REAL / "coco_mini/annotations/person_keypoints_train2017.json",
                  REAL / "coco_mini/train2017"),
}
KEYS = ("AP", "AP50", "AR")


def evaluate(weights: Path, ann: Path, images: Path, boxes: Path | None) -> dict:
    est = PoseEstimator.from_checkpoint(weights, EngineOptions(flip_test=True), "cpu")
    h, w = est.input_size
    ds = KeypointDataset(ann, images, est.keypoint_set, image_size=(h, w),
                         heatmap_size=(h // 4, w // 4), num_instances=1, train=False,
                         boxes=boxes)
    metrics = evaluate_predictions(predict_dataset(est, ds, batch_size=32), est, ds)
    return {k: {m: round(float(v[m]), 4) for m in KEYS} for k, v in metrics.items()}


def oks(pred: np.ndarray, gt: np.ndarray, area: float) -> float:
    """COCO's OKS of one predicted pose against one annotated person."""
    labelled = gt[:, 2] > 0
    if not labelled.any():
        return 0.0
    var = (COCO17.sigmas_array * 2) ** 2
    d2 = ((pred[:, :2] - gt[:, :2]) ** 2).sum(1)
    return float(np.exp(-d2 / var / (area + np.spacing(1)) / 2)[labelled].mean())


def overlap_cases(ann: Path) -> Iterator[tuple[str, list[dict], list[list[int]]]]:
    """Per image where people overlap: its file name, its labelled people and, for each of
    them, the others whose box overlaps theirs (IoU > 0.3)."""
    data = json.loads(ann.read_text())
    people: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0):
            people.setdefault(a["image_id"], []).append(a)
    files = {img["id"]: img["file_name"] for img in data["images"]}
    for image_id, anns in people.items():
        boxes = np.array([a["bbox"] for a in anns], np.float64)
        others = [[j for j in range(len(anns)) if j != i and iou(boxes[i], boxes[j]) > 0.3]
                  for i in range(len(anns))]
        if any(others):
            yield files[image_id], anns, others


def secondary_hits(weights: Path, ann: Path, images: Path) -> dict:
    """How often λ = [0, 1] finds an overlapping person (box IoU > 0.3) with OKS > 0.5, and,
    for comparison, how often λ = [1, 0] (the box's own person) lands on one of them, and how
    often each instance matches the box's own person."""
    est = PoseEstimator.from_checkpoint(weights, EngineOptions(flip_test=True), "cpu")
    cases, hits, own = 0, [0, 0], [0, 0]
    for name, anns, others in overlap_cases(ann):
        boxes = np.array([a["bbox"] for a in anns], np.float64)
        rows = [i for i, o in enumerate(others) if o]
        image = read_image(images / name)
        kps = est.estimate([image], boxes[rows], np.zeros(len(rows), np.int64)).keypoints
        for r, i in enumerate(rows):
            cases += 1
            mine = np.asarray(anns[i]["keypoints"], float).reshape(-1, 3)
            for instance in (0, 1):
                own[instance] += oks(kps[r, instance], mine, anns[i]["area"]) > 0.5
                best = max(oks(kps[r, instance],
                               np.asarray(anns[j]["keypoints"], float).reshape(-1, 3),
                               anns[j].get("area", anns[j]["bbox"][2] * anns[j]["bbox"][3]))
                           for j in others[i])
                hits[instance] += best > 0.5
    return {"cases": cases, "secondary_hits": hits[1],
            "rate": round(hits[1] / max(cases, 1), 4),
            "primary_on_other_person": round(hits[0] / max(cases, 1), 4),
            "primary_on_own_person": round(own[0] / max(cases, 1), 4),
            "secondary_on_own_person": round(own[1] / max(cases, 1), 4)}


def save_neutral(path: Path) -> None:
    """The converted Lightning as an N=2 network whose MIMBs are neutral: both instances are
    the converted network (the starting point of the N=2 fine-tune)."""
    from mipnet_cli.checkpoints.format import save_checkpoint
    from mipnet_cli.models import build_model
    from mipnet_cli.train.heatmap import initialise

    model = build_model("movenet_lightning", num_instances=2)
    initialise(model, get_entry("movenet-lightning-coco").local_path())
    model.neutral_mimbs()
    save_checkpoint(path, model, "coco", {"trained_on": "nothing: converted weights, neutral "
                                                        "MIMBs"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=Path, default=ROOT / "runs/real_movenet_n1/best.safetensors")
    parser.add_argument("--n2", type=Path, default=ROOT / "runs/real_movenet_n2/best.safetensors")
    parser.add_argument("--neutral", type=Path, default=ROOT / "runs/neutral_n2.safetensors",
                        help="the converted network as N=2 with neutral MIMBs (made if absent)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "real_mipnet.json")
    args = parser.parse_args()
    if not args.neutral.is_file():
        save_neutral(args.neutral)
    models = {"converted (no fine-tune)": get_entry("movenet-lightning-coco").local_path(),
              "N=1": args.n1, "N=2": args.n2}
    result: dict = {"machine": cpu_model(), "date": time.strftime("%Y-%m-%d"), "ap": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ann, images = SETS["composites"]
        dropout = Path(tmp) / "dropout.json"
        result["dropout"] = dropout_boxes(ann, dropout)
        yolox = open_detector("yolox_nano", get_entry("yolox-nano-coco").local_path(),
                              score_thresh=0.05)
        detections = Path(tmp) / "yolox.json"
        write_json(detections, detect_dataset(yolox, ann, images)[1])
        for label, weights in models.items():
            runs = {"composites GT": (ann, images, None),
                    "composites dropout": (ann, images, dropout),
                    "composites YOLOX": (ann, images, detections),
                    "ochuman GT": (*SETS["ochuman"], None),
                    "coco_mini GT": (*SETS["coco_mini"], None)}
            for run, (a, im, boxes) in runs.items():
                result["ap"][f"{label} | {run}"] = m = evaluate(weights, a, im, boxes)
                print(f"{label:26s} {run:20s}",
                      {k: v["AP"] for k, v in m.items()}, flush=True)
        result["secondary_hits"] = {
            f"{label} | {name}": secondary_hits(w, *SETS[name])
            for label, w in (("N=2", args.n2), ("N=2 untrained (neutral MIMBs)", args.neutral))
            for name in ("composites", "ochuman")}
        print(result["secondary_hits"], flush=True)
    write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
