"""COCO / OCHuman / CrowdPose keypoint metrics and the ground truth written as results."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from mipnet_cli.core.errors import MipnetError
from mipnet_cli.core.keypoints import COCO17, CROWDPOSE14
from mipnet_cli.evaluate.coco import (
    COCO_METRIC_NAMES,
    CROWDPOSE_METRIC_NAMES,
    coco_keypoint_metrics,
    crowdpose_metrics,
    gt_as_results,
    operating_point,
    write_results,
)

COCO = "mmpose_tests/coco/test_coco.json"
OCHUMAN = "mmpose_tests/ochuman/test_ochuman.json"
CROWDPOSE = "mmpose_tests/crowdpose/test_crowdpose.json"
COCO_MINI = "coco_mini/annotations/person_keypoints_train2017.json"


def _perturb(results: list[dict], fraction: float, seed: int = 0) -> list[dict]:
    """Move every keypoint by a random offset proportional to its person's box size."""
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(results)
    for r in out:
        k = np.asarray(r["keypoints"]).reshape(-1, 3)
        size = np.sqrt(r["bbox"][2] * r["bbox"][3])
        k[:, :2] += rng.normal(0.0, fraction * size, (len(k), 2))
        r["keypoints"] = k.ravel().tolist()
    return out


@pytest.mark.parametrize("name", [COCO, OCHUMAN, COCO_MINI])
def test_coco_ground_truth_scores_one(realdata_dir: Path, name: str, capsys) -> None:
    ann = realdata_dir / name
    data = json.loads(ann.read_text())
    results = gt_as_results(ann)
    people = [a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert len(results) == len(people)
    assert {"image_id", "category_id", "keypoints", "score", "bbox", "box_id", "instance"} <= set(
        results[0]
    )
    metrics = coco_keypoint_metrics(ann, results, COCO17)
    assert capsys.readouterr().out == ""  # pycocotools' printing went into the log
    assert "Average Precision" in metrics["log"]
    for key in ("AP", "AP50", "AP75", "AR", "AR50", "AR75"):
        assert metrics[key] == 1.0
    assert set(COCO_METRIC_NAMES) <= set(metrics)

    worse = coco_keypoint_metrics(ann, _perturb(results, 0.1), COCO17)
    assert worse["AP"] < 0.9 and worse["AR"] < 1.0


def test_crowdpose_ground_truth_scores_one(realdata_dir: Path, capsys) -> None:
    ann = realdata_dir / CROWDPOSE
    results = gt_as_results(ann)
    assert len(results) == 4 and len(results[0]["keypoints"]) == 42  # 5 people, 1 unlabelled
    metrics = crowdpose_metrics(ann, results, CROWDPOSE14)
    assert capsys.readouterr().out == ""
    for key in ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_medium"):
        assert metrics[key] == 1.0
    # both images have crowdIndex in [0.2, 0.8): no easy or hard images
    assert metrics["AP_easy"] == -1.0 and metrics["AP_hard"] == -1.0
    assert set(CROWDPOSE_METRIC_NAMES) <= set(metrics)

    worse = crowdpose_metrics(ann, _perturb(results, 0.1), CROWDPOSE14)
    assert worse["AP"] < 0.9


def test_crowdpose_rules(realdata_dir: Path) -> None:
    """OKS area from the box (× 0.53) and dropping detections without confident joints."""
    ann = realdata_dir / CROWDPOSE
    results = gt_as_results(ann)
    # an extra, high-scoring copy of a person with no confident joint is dropped (no false
    # positive); with one confident joint it counts and lowers the precision
    ghost = copy.deepcopy(results[0])
    ghost["score"] = 2.0
    k = np.asarray(ghost["keypoints"]).reshape(-1, 3)
    k[:, 0] += 300
    k[:, 2] = 0.0
    ghost["keypoints"] = k.ravel().tolist()
    assert crowdpose_metrics(ann, results + [ghost])["AP"] == 1.0
    k[0, 2] = 0.5
    ghost["keypoints"] = k.ravel().tolist()
    assert crowdpose_metrics(ann, results + [ghost])["AP"] < 1.0

    # a 4 px shift of every joint: the OKS uses w*h*0.53 of each GT box, computed here by hand
    data = json.loads(ann.read_text())
    shifted = copy.deepcopy(results)
    for r in shifted:
        k = np.asarray(r["keypoints"]).reshape(-1, 3)
        k[:, 0] += 4.0
        r["keypoints"] = k.ravel().tolist()
    var = (2 * CROWDPOSE14.sigmas_array) ** 2
    oks = []
    for a in data["annotations"]:
        if a["num_keypoints"] == 0:
            continue
        v = np.asarray(a["keypoints"]).reshape(-1, 3)[:, 2] > 0
        area = a["bbox"][2] * a["bbox"][3] * 0.53
        oks.append(np.mean(np.exp(-(16.0 / var / (area + np.spacing(1)) / 2)[v])))
    thresholds = np.linspace(0.5, 0.95, 10)
    expected_ar = np.mean([np.mean([o >= t for o in oks]) for t in thresholds])
    assert crowdpose_metrics(ann, shifted)["AR"] == pytest.approx(expected_ar)


def test_crowdpose_matches_xtcocotools_where_it_imports(realdata_dir: Path) -> None:
    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    except (ImportError, ValueError) as exc:  # its numpy-1 binaries fail under numpy 2
        pytest.skip(f"xtcocotools does not import here: {exc}")
    ann = realdata_dir / CROWDPOSE
    results = gt_as_results(ann)
    for res in (results, _perturb(results, 0.05), _perturb(results, 0.15, seed=1)):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(ann))
            ev = COCOeval(gt, gt.loadRes(copy.deepcopy(res)), "keypoints_crowd",
                          CROWDPOSE14.sigmas_array, use_area=False)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ours = crowdpose_metrics(ann, res)
        assert [ours[k] for k in CROWDPOSE_METRIC_NAMES] == pytest.approx(list(ev.stats))


def test_results_files_and_errors(realdata_dir: Path, tmp_path: Path) -> None:
    ann = realdata_dir / COCO
    out = tmp_path / "sub" / "gt_results.json"
    results = gt_as_results(ann, out)
    assert json.loads(out.read_text()) == results
    assert [p.name for p in out.parent.iterdir()] == ["gt_results.json"]  # no temporary left
    write_results(tmp_path / "again.json", results[:2])
    assert len(json.loads((tmp_path / "again.json").read_text())) == 2

    bad = copy.deepcopy(results[:1])
    bad[0]["image_id"] = 123456789
    with pytest.raises(MipnetError, match="image_id 123456789 is not in the annotations"):
        coco_keypoint_metrics(ann, bad)
    with pytest.raises(MipnetError, match="42 keypoint values, expected 51"):
        coco_keypoint_metrics(ann, [{**results[0], "keypoints": [0.0] * 42}])
    with pytest.raises(MipnetError, match="lack 'crowdIndex'"):
        crowdpose_metrics(ann, results, COCO17)
    with pytest.raises(MipnetError, match="annotation file not found"):
        coco_keypoint_metrics(tmp_path / "nope.json", results)
    empty = coco_keypoint_metrics(ann, [])
    assert empty["AP"] == 0.0 and "no results" in empty["log"]
    # the caller's annotations are left as they were
    data = json.loads(ann.read_text())
    coco_keypoint_metrics(data, results)
    assert data == json.loads(ann.read_text())


def _person(x0: float, y0: float, ann_id: int) -> dict:
    rng = np.random.default_rng(ann_id)
    xy = np.stack([x0 + rng.uniform(0, 60, 17), y0 + rng.uniform(0, 150, 17)], 1)
    kps = np.concatenate([xy, np.full((17, 1), 2.0)], 1)
    return {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
            "keypoints": kps.ravel().tolist(), "bbox": [x0, y0, 60, 150], "area": 9000.0}


def test_operating_point_is_the_f1_best_pose_score() -> None:
    people = [_person(50, 50, 1), _person(300, 200, 2)]
    gt = {"images": [{"id": 1, "width": 640, "height": 480, "file_name": "a.jpg"}],
          "annotations": people, "categories": [COCO17.coco_category()]}

    def result(person: dict, score: float, shift: float = 0.0) -> dict:
        kps = np.asarray(person["keypoints"]).reshape(-1, 3) + [shift, 0, 0]
        return {"image_id": 1, "category_id": 1, "keypoints": kps.ravel().tolist(),
                "score": score}

    results = [result(people[0], 0.9), result(people[0], 0.7, 200.0),  # a miss between hits
               result(people[1], 0.6), result(people[1], 0.3, -250.0)]
    point = operating_point(gt, results)
    # 0.9: 1 found, 0 wrong (F1 2/3); 0.6: 2 found, 1 wrong (F1 0.8); 0.3 finds no one more
    assert point["threshold"] == pytest.approx(0.6)
    assert (point["precision"], point["recall"], point["f1"]) == pytest.approx((2 / 3, 1, 0.8))
    assert operating_point(gt, results[1::2]) is None  # nothing matched
