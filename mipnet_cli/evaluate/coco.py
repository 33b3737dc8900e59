"""Keypoint metrics: COCO/OCHuman AP via pycocotools, CrowdPose AP with the CrowdPose rules.

Results are COCO keypoint results (`image_id`, `category_id`, `keypoints` [3K], `score`, plus
our extra fields such as `bbox`, `box_id`, `instance`, which the evaluators never see).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MipnetError
from ..core.files import write_json
from ..core.keypoints import COCO17, CROWDPOSE14, KeypointSet
from ..data.dataset import load_coco_json, person_category_ids

COCO_METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL",
)
CROWDPOSE_METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard",
)

# The fields the evaluators read. `bbox` is left out on purpose: with it, the COCO API takes
# a result's area from the box instead of from its keypoints' extent as the official code does.
_EVAL_FIELDS = ("image_id", "category_id", "keypoints", "score")

# An annotation file, a COCO-format dict, or a pycocotools/xtcocotools COCO object.
AnnotationSource = str | os.PathLike | dict | Any


def _dataset_dict(gt: AnnotationSource) -> tuple[dict, Path | None]:
    """The annotation dict and, if known, the file it came from."""
    if isinstance(gt, str | os.PathLike):
        return load_coco_json(gt), Path(gt)
    if isinstance(gt, dict):
        return gt, None
    dataset = getattr(gt, "dataset", None)
    if isinstance(dataset, dict):
        return dataset, None
    raise TypeError(f"expected an annotation file, dict or COCO object, got {type(gt).__name__}")


def _eval_results(results: list[dict], image_ids: set[int], keypoint_set: KeypointSet) -> list:
    """Copies of the results with only the evaluated fields, checked against the ground truth."""
    out = []
    size = 3 * keypoint_set.num_joints
    for i, r in enumerate(results):
        missing = [k for k in _EVAL_FIELDS if k not in r]
        if missing:
            raise MipnetError(f"result {i}: missing field(s) {', '.join(missing)}")
        if len(r["keypoints"]) != size:
            raise MipnetError(
                f"result {i}: {len(r['keypoints'])} keypoint values, expected {size} "
                f"({keypoint_set.name}, {keypoint_set.num_joints} joints)"
            )
        if r["image_id"] not in image_ids:
            raise MipnetError(f"result {i}: image_id {r['image_id']} is not in the annotations")
        out.append({k: copy.deepcopy(r[k]) for k in _EVAL_FIELDS})
    return out


def _run(make_eval, stat_names: tuple[str, ...]) -> dict[str, Any]:
    """Run evaluate/accumulate/summarize with their printing captured into `log`."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev = make_eval()
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics: dict[str, Any] = {
        name: float(v) for name, v in zip(stat_names, ev.stats, strict=True)
    }
    metrics["log"] = buf.getvalue()
    return metrics


def _coco(cls: type, dataset: dict, keypoint_set: KeypointSet) -> Any:
    """A COCO index over a private copy of the annotations (the evaluators write into them);
    a file without `categories` gets the keypoint set's person category."""
    coco = cls()
    coco.dataset = copy.deepcopy(dataset)
    coco.dataset.setdefault("categories", [keypoint_set.coco_category()])
    coco.createIndex()
    return coco


def _empty(stat_names: tuple[str, ...]) -> dict[str, Any]:
    metrics: dict[str, Any] = dict.fromkeys(stat_names, 0.0)
    metrics["log"] = "no results to evaluate: every metric is 0\n"
    return metrics


def coco_keypoint_metrics(
    gt: AnnotationSource, results: list[dict], keypoint_set: KeypointSet = COCO17
) -> dict[str, Any]:
    """COCO keypoint AP/AR (pycocotools, iouType 'keypoints', OKS with the set's sigmas).

    Returns AP, AP50, AP75, APM, APL, AR, AR50, AR75, ARM, ARL as floats and `log`, the text
    pycocotools would have printed.
    """
    make_eval = _keypoint_eval(gt, results, keypoint_set)
    return _empty(COCO_METRIC_NAMES) if make_eval is None else _run(make_eval, COCO_METRIC_NAMES)


def _keypoint_eval(gt: AnnotationSource, results: list[dict], keypoint_set: KeypointSet):
    """A maker of pycocotools keypoint evaluations of `results`; None when there are none."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, _ = _dataset_dict(gt)
    image_ids = {img["id"] for img in dataset.get("images", [])}
    dts = _eval_results(results, image_ids, keypoint_set)
    if not dts:
        return None

    def make_eval():
        coco_gt = _coco(COCO, dataset, keypoint_set)
        ev = COCOeval(coco_gt, coco_gt.loadRes(dts), "keypoints")
        ev.params.kpt_oks_sigmas = keypoint_set.sigmas_array
        return ev

    return make_eval


def operating_point(gt: AnnotationSource, results: list[dict], keypoint_set: KeypointSet = COCO17,
                    oks: float = 0.5) -> dict[str, float] | None:
    """The pose score at and above which `results` best match the ground truth: the threshold
    of highest F1, a result counting as found when COCO's matching pairs it with a person at
    OKS >= `oks` (top 20 per image, crowd and unlabelled people ignored, as in COCO AP).
    Returns threshold, precision, recall and f1; None when nothing is matched."""
    make_eval = _keypoint_eval(gt, results, keypoint_set)
    if make_eval is None:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        ev = make_eval()
        ev.params.iouThrs = np.array([oks])
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
    hits, misses, people = [], [], 0
    for e in ev.evalImgs:
        if e is None:
            continue
        counted = ~e["dtIgnore"][0].astype(bool)
        matched = e["dtMatches"][0] > 0
        scores = np.asarray(e["dtScores"])
        hits.append(scores[counted & matched])
        misses.append(scores[counted & ~matched])
        people += int((np.asarray(e["gtIgnore"]) == 0).sum())
    hit = np.sort(np.concatenate(hits or [np.zeros(0)]))
    miss = np.sort(np.concatenate(misses or [np.zeros(0)]))
    if len(hit) == 0:
        return None
    tp = len(hit) - np.searchsorted(hit, hit, "left")  # found people at threshold = each hit
    fp = len(miss) - np.searchsorted(miss, hit, "left")
    f1 = 2 * tp / (tp + fp + people)
    best = int(np.argmax(f1))
    return {"threshold": float(hit[best]), "precision": float(tp[best] / (tp[best] + fp[best])),
            "recall": float(tp[best] / max(people, 1)), "f1": float(f1[best])}


def crowdpose_metrics(
    gt: AnnotationSource, results: list[dict], keypoint_set: KeypointSet = CROWDPOSE14
) -> dict[str, Any]:
    """CrowdPose AP/AR with the benchmark's rules (`keypoints_crowd`, use_area=False).

    Returns AP, AP50, AP75, AR, AR50, AR75, AP_easy, AP_medium, AP_hard (crowdIndex < 0.2,
    0.2-0.8, >= 0.8; -1 where a split has no images) and `log`. See `crowdpose_eval`.
    """
    from pycocotools.coco import COCO

    from .crowdpose import CrowdPoseEval

    dataset, path = _dataset_dict(gt)
    if any("crowdIndex" not in img for img in dataset.get("images", [])):
        where = path or "annotations"
        raise MipnetError(f"{where}: images lack 'crowdIndex', which CrowdPose metrics need")
    image_ids = {img["id"] for img in dataset.get("images", [])}
    dts = _eval_results(results, image_ids, keypoint_set)
    if not dts:
        return _empty(CROWDPOSE_METRIC_NAMES)

    def make_eval():
        coco_gt = _coco(COCO, dataset, keypoint_set)
        return CrowdPoseEval(coco_gt, coco_gt.loadRes(dts), keypoint_set.sigmas_array)

    return _run(make_eval, CROWDPOSE_METRIC_NAMES)


def gt_as_results(ann_file: AnnotationSource, out_path: str | os.PathLike | None = None) -> list:
    """The ground truth as our results: one entry per non-crowd person with keypoints.

    Labelled joints get confidence 1, unlabelled ones (0, 0, 0). Written atomically to
    `out_path` when given. Evaluating these gives AP 1.0.
    """
    dataset, _ = _dataset_dict(ann_file)
    person = person_category_ids(dataset)
    results = []
    for ann in dataset.get("annotations", []):
        kps = ann.get("keypoints") or []
        if ann.get("category_id") not in person or ann.get("iscrowd", 0) or not any(kps):
            continue
        k = np.asarray(kps, dtype=np.float64).reshape(-1, 3)
        labelled = k[:, 2] > 0
        k[:, 2] = labelled
        k[~labelled, :2] = 0
        results.append({
            "image_id": ann["image_id"],
            "category_id": ann["category_id"],
            "keypoints": [float(v) for v in k.reshape(-1)],
            "score": 1.0,
            "bbox": [float(v) for v in ann["bbox"]],
            "box_id": ann["id"],
            "instance": 0,
        })
    if out_path is not None:
        write_results(out_path, results)
    return results


def write_results(path: str | os.PathLike, results: list[dict]) -> None:
    """Write a results list as JSON, atomically."""
    write_json(path, results)
