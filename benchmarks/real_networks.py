"""Accuracy of the converted real networks on the real annotated sets in ../shared/realdata.

- Person boxes (pycocotools, IoU .50:.95, person category): each shipped detector — the
  converted COCO YOLOX-Nano and the synthetic demo Faster R-CNN — at score >= 0.01.
- Pose AP (pycocotools OKS): each pose network — MoveNet Thunder / Lightning (converted) and the
  synthetic demo MIPNet — with ground-truth boxes and with the default detector's boxes
  (YOLOX-Nano, score >= 0.05), flip test on; Thunder also without flip. The CrowdPose sample
  is scored on the 12 body joints it shares with COCO-17 (its head-top and neck joints have no
  COCO counterpart), under COCO's rules, with box area as the OKS scale.

Usage (from the repository root): python benchmarks/real_networks.py [--sets NAME ...]
(--sets re-measures only those sets and keeps the others' figures in the JSON file).
Writes benchmarks/real_networks.json and prints the tables pasted into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.core.keypoints import COCO17  # noqa: E402
from mipnet_cli.data import KeypointDataset  # noqa: E402
from mipnet_cli.detect.registry import open_detector  # noqa: E402
from mipnet_cli.evaluate.predictions import evaluate_predictions, predict_dataset  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402
from mipnet_cli.train.detector import box_metrics, detect_dataset  # noqa: E402

REAL = ROOT.parent / "shared" / "realdata"
SETS = {  # name -> (annotation file, image folder)
    "coco_mini": (REAL / "coco_mini/annotations/person_keypoints_train2017.json",
                  REAL / "coco_mini/train2017"),
    "mmpose coco": (REAL / "mmpose_tests/coco/test_coco.json", REAL / "mmpose_tests/coco"),
    "ochuman": (REAL / "mmpose_tests/ochuman/test_ochuman.json", REAL / "mmpose_tests/ochuman"),
    "crowdpose": (REAL / "mmpose_tests/crowdpose/test_crowdpose.json",
                  REAL / "mmpose_tests/crowdpose"),
}
POSE_SETS = ("coco_mini", "mmpose coco", "ochuman", "crowdpose")
DETECTORS = ("yolox-nano-coco", "detector-synth-person")
POSES = ("movenet-thunder-coco", "movenet-lightning-coco", "mipnet-demo-synth-n2")
KEYS = ("AP", "AP50", "AP75", "AR")


def crowdpose_as_coco17(ann: Path, out: Path) -> Path:
    """A CrowdPose annotation file as COCO-17: its 12 body joints in COCO's slots 5-16 (same
    order), the face joints unlabelled, head-top and neck dropped; box area as `area`."""
    data = json.loads(ann.read_text())
    for a in data["annotations"]:
        k = a["keypoints"]
        body = k[:36]
        a["keypoints"] = [0] * 15 + body
        a["num_keypoints"] = sum(1 for v in body[2::3] if v > 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        a.setdefault("iscrowd", 0)
    data["categories"] = [COCO17.coco_category()]
    write_json(out, data)
    return out


def detector(name: str, score_thresh: float):
    entry = get_entry(name)
    return open_detector(entry.builder, entry.local_path(), score_thresh=score_thresh,
                         device="cpu")


def pose_ap(weights: str, ann: Path, images: Path, boxes: Path | None, flip: bool,
            half: bool = False) -> dict:
    est = PoseEstimator.from_checkpoint(get_entry(weights).local_path(),
                                        EngineOptions(flip_test=flip, half=half), "cpu")
    h, w = est.input_size
    dataset = KeypointDataset(ann, images, est.keypoint_set, image_size=(h, w),
                              heatmap_size=(h // 4, w // 4), num_instances=1, train=False,
                              boxes=boxes)
    start = time.perf_counter()
    preds = predict_dataset(est, dataset, batch_size=32)
    seconds = time.perf_counter() - start
    merged = evaluate_predictions(preds, est, dataset, per_instance=False)["merged"]
    return {**{k: round(float(merged[k]), 4) for k in KEYS}, "boxes": len(dataset),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "real_networks.json")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"{REAL} is absent: this benchmark needs ../shared/realdata")
    result: dict = {"boxes": {}, "pose": {}}
    if args.out.is_file() and args.sets != list(SETS):
        result = json.loads(args.out.read_text())
    result.update(machine=cpu_model(), date=time.strftime("%Y-%m-%d"))
    with tempfile.TemporaryDirectory() as tmp:
        det_files: dict[str, Path] = {}
        pose_ann = {name: ann for name, (ann, _) in SETS.items()}
        if "crowdpose" in args.sets:
            pose_ann["crowdpose"] = crowdpose_as_coco17(SETS["crowdpose"][0],
                                                        Path(tmp) / "crowdpose_coco17.json")
        for name in DETECTORS:
            low = detector(name, 0.01)
            for set_name in args.sets:
                ann, images = SETS[set_name]
                data, dets = detect_dataset(low, ann, images)
                m = box_metrics(data, dets)
                result["boxes"][f"{name} | {set_name}"] = {k: round(v, 4) for k, v in m.items()}
                print(f"boxes  {name:24s} {set_name:12s} AP {m['AP']:.3f} AP50 {m['AP50']:.3f} "
                      f"AR100 {m['AR100']:.3f}", flush=True)
                if name == DETECTORS[0]:
                    path = Path(tmp) / f"{set_name.replace(' ', '_')}.json"
                    write_json(path, [d for d in dets if d["score"] >= 0.05])
                    det_files[set_name] = path
        for weights in POSES:
            for set_name in (s for s in POSE_SETS if s in args.sets):
                ann, images = pose_ann[set_name], SETS[set_name][1]
                runs = [("GT", None, True), ("YOLOX-Nano", det_files[set_name], True)]
                if weights == POSES[0]:
                    runs.append(("GT, no flip", None, False))
                for label, boxes, flip in runs:
                    m = pose_ap(weights, ann, images, boxes, flip)
                    result["pose"][f"{weights} | {set_name} | {label}"] = m
                    print(f"pose   {weights:24s} {set_name:12s} {label:12s} AP {m['AP']:.3f} "
                          f"AP50 {m['AP50']:.3f} AR {m['AR']:.3f} ({m['boxes']} boxes, "
                          f"{m['seconds']} s)", flush=True)
    write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
