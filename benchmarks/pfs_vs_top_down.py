"""The single-stage network against the top-down defaults, side by side in one run.

- AP on the held-out composites, the OCHuman sample and coco_mini: the single-stage network
  (whole images, no detector) and the top-down default (the shipped YOLOX-Nano detector, then
  MoveNet Thunder per box), the latter scored by keypoint confidence (official) and by the
  single-stage network's PSM (`--rescore psm`); with ground-truth boxes as well.
- Time per image as the number of people grows (1, 5, 10, 20 per image; composites of real
  people, 640x480, all of coco_mini's people): both pipelines on the same images in one
  process, with their ratio.

Usage (from the repository root):
    python benchmarks/pfs_vs_top_down.py [--weights WEIGHTS.safetensors]
Writes benchmarks/pfs_vs_top_down.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.core.results import whole_image_boxes  # noqa: E402
from mipnet_cli.detect.boxes import load_gt_boxes  # noqa: E402
from mipnet_cli.detect.registry import open_detector  # noqa: E402
from mipnet_cli.detect.sources import TableBoxes  # noqa: E402
from mipnet_cli.evaluate.predictions import score_results  # noqa: E402
from mipnet_cli.media.images import read_image  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402
from mipnet_cli.pose.psm import PsmScorer  # noqa: E402

REAL = ROOT.parent / "shared" / "realdata"
COMPOSITES = ROOT / "data" / "real_composites" / "val"
COCO_MINI = REAL / "coco_mini"
SETS = {
    "composites": (COMPOSITES / "annotations.json", COMPOSITES / "images"),
    "ochuman": (REAL / "mmpose_tests/ochuman/test_ochuman.json", REAL / "mmpose_tests/ochuman"),
    "coco_mini": (COCO_MINI / "annotations/person_keypoints_train2017.json",
                  COCO_MINI / "train2017"),
}
KEYS = ("AP", "AP50", "AP75", "APM", "APL")
PEOPLE = (1, 5, 10, 20)


def images_of(ann: Path, folder: Path) -> list[tuple[int, Path]]:
    data = json.loads(ann.read_text())
    return [(im["id"], folder / im["file_name"]) for im in data["images"]]


def run(est: PoseEstimator, source, items: list[tuple[int, Path]]) -> tuple[list, float]:
    """COCO results of `est` with boxes from `source` (None: the whole image), and the
    seconds spent in detection + pose (image reading excluded)."""
    results, seconds = [], 0.0
    for image_id, path in items:
        rgb = read_image(path)
        start = time.perf_counter()
        boxes = (whole_image_boxes([rgb]) if source is None
                 else source([rgb], [image_id]))
        poses = est.predict([rgb], boxes)[0]
        seconds += time.perf_counter() - start
        results += [{"image_id": image_id, "category_id": 1, "score": p.score,
                     "keypoints": [float(v) for v in p.keypoints.reshape(-1)]} for p in poses]
    return results, seconds


def metrics(ann: Path, results: list, kps) -> dict:
    m = score_results(str(ann), results, kps)
    return {k: round(float(m[k]), 4) for k in KEYS}


def crowd_sets(folder: Path, count: int) -> dict[int, Path]:
    """Composites with exactly n people each, 640x480, cut from all of coco_mini's people (20
    people need more identities than its held-out split has; the single-stage network saw
    most of them in training, so these sets measure time, not accuracy)."""
    out = {}
    for n in PEOPLE:
        dest = folder / f"people_{n}"
        subprocess.run([sys.executable, "-m", "mipnet_cli", "synth", str(dest), "-n", str(count),
                        "--seed", str(10 + n), "--width", "640", "--height", "480",
                        "--min-people", str(n), "--max-people", str(n), "--overlap", "0.5",
                        "--min-scale", "0.3", "--max-scale", "0.6",
                        "--real-people", str(SETS["coco_mini"][0]),
                        "--real-images", str(SETS["coco_mini"][1]), "--person-split", "train",
                        "--val-fraction", "0"], check=True, capture_output=True)
        out[n] = dest
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path,
                        default=ROOT / "runs" / "pfs_nano" / "best.safetensors",
                        help="a pfs checkpoint (configs/pfs_nano*.toml; none ships)")
    parser.add_argument("--timing-images", type=int, default=10,
                        help="images per people count in the timing table (0: no timing)")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "benchmarks" / "pfs_vs_top_down.json")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    opts = EngineOptions(flip_test=True)
    single = PoseEstimator.from_checkpoint(args.weights, opts, "cpu")
    top_path = get_entry("movenet-thunder-coco").local_path()
    top = PoseEstimator.from_checkpoint(top_path, opts, "cpu")
    rescored = PoseEstimator.from_checkpoint(
        top_path, EngineOptions(flip_test=True, rescore="psm"), "cpu",
        scorer=PsmScorer.from_checkpoint(args.weights, "cpu"))
    assert isinstance(rescored.scorer, PsmScorer)
    detector = open_detector("yolox_nano", get_entry("yolox-nano-coco").local_path(),
                             score_thresh=0.3, device="cpu")

    def detect(images, ids):
        return detector.detect(images)

    report: dict = {"machine": cpu_model(), "threads": torch.get_num_threads(),
                    "single_stage": str(args.weights.resolve().relative_to(ROOT)), "sets": {}}
    for name, (ann, folder) in SETS.items():
        if not ann.is_file():
            continue
        items = images_of(ann, folder)
        gt = TableBoxes(load_gt_boxes(ann), "gt").boxes
        row = {}
        for label, est, source in (("single stage", single, None),
                                   ("top-down, detector", top, detect),
                                   ("top-down, detector, --rescore psm", rescored, detect),
                                   ("top-down, GT boxes", top, gt),
                                   ("top-down, GT boxes, --rescore psm", rescored, gt)):
            results, seconds = run(est, source, items)
            row[label] = metrics(ann, results, single.keypoint_set) | {
                "s_per_image": round(seconds / len(items), 4)}
            print(name, label, json.dumps(row[label]), flush=True)
        report["sets"][name] = row
        write_json(args.json, report, indent=1)
    if args.timing_images < 1:
        return
    with tempfile.TemporaryDirectory() as tmp:
        timing = {}
        for n, dest in crowd_sets(Path(tmp), args.timing_images).items():
            ann = dest / "annotations.json"
            items = images_of(ann, dest / "images")
            res_s, t_s = run(single, None, items)
            res_t, t_t = run(top, detect, items)
            annotated = len(json.loads(ann.read_text())["annotations"]) / len(items)
            timing[str(n)] = {
                "annotated_people_per_image": round(annotated, 1),
                "single_stage_s": round(t_s / len(items), 4),
                "top_down_s": round(t_t / len(items), 4),
                "top_down_over_single": round(t_t / t_s, 2),
                "single_stage_AP": metrics(ann, res_s, single.keypoint_set)["AP"],
                "top_down_AP": metrics(ann, res_t, single.keypoint_set)["AP"]}
            print("people", n, json.dumps(timing[str(n)]), flush=True)
        report["time_vs_people"] = timing
    write_json(args.json, report, indent=1)


if __name__ == "__main__":
    main()
