"""OKS, OKS-NMS and the MIPNet instance merge against the official fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mipnet_cli.core.keypoints import COCO17
from mipnet_cli.core.oks import oks_iou, oks_nms
from mipnet_cli.pose.merge import box_areas, group_by_image, keypoint_scores, merge_instances


@pytest.fixture(scope="module")
def oks_cases(reference_dir):
    return json.loads((reference_dir / "oks_nms.json").read_text())


@pytest.fixture(scope="module")
def pipeline(reference_dir):
    return json.loads((reference_dir / "mipnet_eval_pipeline.json").read_text())


def test_default_sigmas_are_the_official_ones(oks_cases):
    np.testing.assert_array_equal(COCO17.sigmas_array, oks_cases["sigmas"])


def test_oks_iou_cases(oks_cases):
    for case in oks_cases["oks_iou_cases"]:
        g = np.asarray(case["g"], np.float32)
        d = np.asarray(case["d"], np.float32)
        a_d = np.asarray(case["a_d"])
        # 1 value in 88 differs by 1 float64 ulp (2.2e-16): numpy's vectorised exp (AVX-512
        # here) versus the libm exp the fixture machine used.
        np.testing.assert_allclose(oks_iou(g, d, case["a_g"], a_d), case["oks"], rtol=0, atol=1e-15)
        np.testing.assert_allclose(oks_iou(g.reshape(17, 3), d.reshape(-1, 17, 3), case["a_g"], a_d,
                                           in_vis_thre=0.2),
                                   case["oks_in_vis_thre_0_2"], rtol=0, atol=1e-15)
    assert any(0 < np.count_nonzero(np.asarray(c["oks"]) != np.asarray(c["oks_in_vis_thre_0_2"]))
               for c in oks_cases["oks_iou_cases"])


def test_oks_iou_only_detection_visibility_selects_joints():
    g = np.zeros((17, 3), np.float32)
    d = np.zeros((1, 17, 3), np.float32)
    d[0, :, 0] = np.arange(17) * 10.0
    d[0, :3, 2] = 0.9  # only the detection's confidences matter; g's (all 0) are ignored
    full = oks_iou(g, d, 1000.0, [1000.0])
    sel = oks_iou(g, d, 1000.0, [1000.0], in_vis_thre=0.2)
    var = (COCO17.sigmas_array[:3] * 2) ** 2
    e = d[0, :3, 0].astype(np.float64) ** 2 / var / (1000 + np.spacing(1)) / 2
    expected = np.mean(np.exp(-e))
    assert sel[0] == pytest.approx(expected, rel=1e-15) and sel[0] != full[0]
    assert oks_iou(g, d * [1, 1, 0], 1000.0, [1000.0], in_vis_thre=0.2)[0] == 0.0


def test_oks_nms_cases(oks_cases):
    for case in oks_cases["oks_nms_cases"]:
        keep = oks_nms(np.asarray(case["keypoints"], np.float32), np.asarray(case["score"]),
                       np.asarray(case["area"]), case["thresh"])
        assert keep.tolist() == case["keep"]
    assert oks_nms(np.zeros((0, 17, 3), np.float32), [], []).tolist() == []


def _evaluate_lambda(preds, all_boxes, img_path, decayed: bool) -> dict[str, list[dict]]:
    """The official evaluate_lambda result lists, assembled from ``merge_instances``.

    Rows are grouped by image; ``mode`` (column 7, lambda_a) 1 is instance 0 and mode 0 is
    instance 1. With ``decayed`` the score column already carries the 0.5 decay; otherwise it
    is undone first and ``merge_instances`` applies it.
    """
    preds = np.asarray(preds, np.float32)
    boxes = np.asarray(all_boxes, np.float64)
    image_ids = [int(p[-16:-4]) for p in img_path]
    instances = np.where(boxes[:, 7] == 0, 1, 0)
    box_scores = boxes[:, 5] if decayed else np.where(instances > 0, boxes[:, 5] / 0.5, boxes[:, 5])
    out: dict[str, list[dict]] = {"merged": [], "mode0": [], "mode1": []}
    for rows in group_by_image(image_ids):
        for name, sub in (("merged", rows), ("mode0", rows[instances[rows] == 1]),
                          ("mode1", rows[instances[rows] == 0])):
            res = merge_instances(preds[sub], box_scores[sub], box_areas(boxes[sub, 2:4]),
                                  instances[sub], decay=1.0 if decayed else 0.5)
            for k in res.keep:
                i = sub[k]
                out[name].append({
                    "image_id": image_ids[i],
                    "category_id": 1,
                    "keypoints": preds[i].astype(np.float64).reshape(-1).tolist(),
                    "score": float(res.scores[k]),
                    "center": boxes[i, 0:2].tolist(),
                    "scale": boxes[i, 2:4].tolist(),
                    "annotation_id": int(boxes[i, 6]),
                    "box_score": float(res.box_scores[k]),
                    "keypoint_score": float(res.keypoint_scores[k]),
                })
    return out


@pytest.mark.parametrize("case", ["rescoring", "end_to_end"])
@pytest.mark.parametrize("decayed", [True, False])
def test_merge_reproduces_evaluate_lambda_exactly(pipeline, case, decayed):
    data = pipeline[case]
    preds = data["preds"] if case == "rescoring" else data["all_preds"]
    ours = _evaluate_lambda(preds, data["all_boxes"], data["img_path"], decayed)
    for name in ("merged", "mode0", "mode1"):
        assert ours[name] == data["results"][name], name  # same entries, order and float values
    assert data["results"]["mode2"] == [] and data["results"]["mode3"] == []
    if case == "rescoring":  # collapsed secondaries were suppressed (54 rows -> 41)
        assert len(ours["merged"]) == 41 < len(data["all_boxes"])


def test_box_areas_match_validate(pipeline):
    for case in ("rescoring", "end_to_end"):
        boxes = np.asarray(pipeline[case]["all_boxes"])
        np.testing.assert_array_equal(box_areas(boxes[:, 2:4]), boxes[:, 4])


def test_keypoint_scores():
    kp = np.zeros((3, 17, 3), np.float32)
    kp[0, :, 2] = 0.2  # not strictly above the threshold
    kp[1, :4, 2] = [0.9, 0.3, 0.1, 0.21]
    kp[2, :, 2] = np.linspace(0.1, 0.9, 17)
    scores = keypoint_scores(kp)
    assert scores.dtype == np.float32
    assert scores[0] == 0 and scores[1] == np.float32(np.float32(0.9 + 0.3) + np.float32(0.21)) / 3
    conf = kp[2, :, 2]
    assert scores[2] == pytest.approx(conf[conf > 0.2].mean(), rel=1e-6)


def _pose(x0: float, y0: float, conf: float) -> np.ndarray:
    rng = np.random.default_rng(int(x0))
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = x0 + rng.uniform(0, 60, 17)
    kp[:, 1] = y0 + rng.uniform(0, 150, 17)
    kp[:, 2] = conf
    return kp


def test_merge_suppresses_a_collapsed_secondary_and_keeps_a_distinct_one():
    primary_a, primary_b = _pose(100, 50, 0.8), _pose(300, 40, 0.7)
    # The secondary of box b collapsed onto person a; the secondary of box a is a third person.
    collapsed = primary_a + np.array([0.5, -0.5, -0.1], np.float32)
    distinct = _pose(500, 60, 0.9)
    kp = np.stack([primary_a, primary_b, distinct, collapsed])
    res = merge_instances(kp, [1.0, 1.0, 1.0, 1.0], [20000.0] * 4, [0, 0, 1, 1])
    np.testing.assert_array_equal(res.box_scores, [1.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(res.scores, [0.8, 0.7, 0.45, 0.35], rtol=1e-6)
    assert res.keep.tolist() == [0, 1, 2]


def test_merge_tie_order_follows_the_official_merged_list():
    """Equal scores: the official list is secondary rows then primary rows, visited from the end."""
    pose = _pose(100, 50, 0.1)  # every confidence <= 0.2: score 0 for both
    res = merge_instances(np.stack([pose, pose]), [1.0, 1.0], [9000.0, 9000.0], [0, 1])
    assert res.keep.tolist() == [0]  # the primary survives
    res = merge_instances(np.stack([pose, pose]), [1.0, 1.0], [9000.0, 9000.0], [1, 0])
    assert res.keep.tolist() == [1]


def test_group_by_image():
    groups = group_by_image([785, 1000, 785, 42, 1000, 785])
    assert [g.tolist() for g in groups] == [[0, 2, 5], [1, 4], [3]]
    assert group_by_image([]) == []
