"""The engine end to end against the official `validate_lambda_quantitative` fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mipnet_cli.core.results import Box
from mipnet_cli.models import build_from_config, build_model, config_from_official
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator

TINY = "tiny_mipnet_pose_hrnet_se_lambda"


@pytest.fixture(scope="module")
def e2e(reference_dir):
    fixture = json.loads((reference_dir / "mipnet_eval_pipeline.json").read_text())["end_to_end"]
    tensors = torch.load(reference_dir / "mipnet_eval_pipeline_tensors.pt", weights_only=True)
    cfg = json.loads((reference_dir / f"{TINY}.config.json").read_text())["config"]
    blob = torch.load(reference_dir / f"{TINY}.pt", weights_only=True)
    model = build_from_config(config_from_official(cfg))
    model.load_state_dict(blob["state_dict"])
    return fixture, tensors, blob, PoseEstimator(model, "coco", EngineOptions(), device="cpu")


def test_flip_test_heatmaps_equal_official(e2e):
    _, tensors, blob, est = e2e
    ours = est.heatmaps(blob["inputs"])  # instance 0 = λ [1,0] (official lambda_val 1)
    ref = tensors["e2e_heatmaps"]  # [lambda_val 0, lambda_val 1]
    assert (ours[:, 0] - ref[1]).abs().max() < 1e-5
    assert (ours[:, 1] - ref[0]).abs().max() < 1e-5


def test_decode_and_merge_equal_official(e2e):
    fixture, tensors, _, est = e2e
    centers = np.array(fixture["meta_center"], np.float32)
    scales = np.array(fixture["meta_scale"], np.float32)
    heatmaps = torch.stack([tensors["e2e_heatmaps"][1], tensors["e2e_heatmaps"][0]], dim=1)
    keypoints = est.decode(heatmaps, centers, scales)
    all_preds = np.array(fixture["all_preds"], np.float32)  # rows: λ0 boxes 0-2, then λ1
    np.testing.assert_allclose(keypoints[:, 1], all_preds[:3], atol=1e-4)
    np.testing.assert_allclose(keypoints[:, 0], all_preds[3:], atol=1e-4)

    from mipnet_cli.pose.engine import CropPoses

    crop_poses = CropPoses(keypoints, centers, scales)
    boxes = [Box(np.zeros(4), score, "gt", ann_id) for score, ann_id in
             zip(fixture["meta_score"], fixture["meta_annotation_id"], strict=True)]
    image_ids = [int(p[-16:-4]) for p in fixture["meta_image"]]
    merged = []
    for image_id in dict.fromkeys(image_ids):
        rows = np.array([i for i, v in enumerate(image_ids) if v == image_id])
        merged += [(image_id, p) for p in est.merge(crop_poses, boxes, rows)]
    expected = fixture["results"]["merged"]
    assert len(merged) == len(expected)
    for (image_id, pose), ref in zip(merged, expected, strict=True):
        assert image_id == ref["image_id"] and pose.box_id == ref["annotation_id"]
        assert pose.score == pytest.approx(ref["score"], abs=1e-6)
        np.testing.assert_allclose(pose.keypoints.reshape(-1), ref["keypoints"], atol=1e-4)


def test_predict_groups_poses_by_image_and_records_their_source():
    torch.manual_seed(0)
    est = PoseEstimator(build_model("hrnet_w8_tiny", num_instances=2), "coco",
                        EngineOptions(flip_test=False), device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [[Box(np.array([10, 10, 60, 110.0]), 0.9, id=7)], [],
             [Box(np.array([-20, 5, 40, 100.0]), 0.5, id=8),  # partly outside the image
              Box(np.array([30, 0, 150, 119.0]), 0.7, id=9)]]
    out = est.predict(images, boxes)
    assert [len(p) >= 1 for p in out] == [True, False, True]
    for poses, per_image in zip(out, boxes, strict=True):
        ids = {b.id for b in per_image}
        for pose in poses:
            assert pose.box_id in ids and pose.instance in (0, 1)
            assert pose.keypoints.shape == (17, 3)
    assert est.predict(images[:1], [[]]) == [[]]


def test_half_on_a_cpu_is_refused_without_native_bf16(monkeypatch) -> None:
    from mipnet_cli.pose import engine as engine_module

    monkeypatch.setattr(engine_module, "autocast_dtype", lambda device: None)
    with pytest.raises(ValueError, match="no native bf16"):
        PoseEstimator(build_model("hrnet_w8_tiny"), "coco", EngineOptions(half=True), "cpu")


def test_half_on_a_cpu_runs_the_network_in_bf16(realdata_dir) -> None:
    """--half on a CPU with native bf16: autocast around the network; the real Lightning's
    keypoints on a real photo stay within a pixel or two of fp32."""
    from mipnet_cli.checkpoints.zoo import get_entry
    from mipnet_cli.core.hardware import autocast_dtype
    from mipnet_cli.media.images import read_image

    if autocast_dtype(torch.device("cpu")) is not torch.bfloat16:
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")
    path = get_entry("movenet-lightning-coco").local_path()
    image = read_image(realdata_dir / "mmpose_tests/coco/000000000785.jpg")
    box = [Box(np.array([280.8, 44.7, 499.5, 391.4]), 0.9)]  # its annotated skier
    seen = []
    full = PoseEstimator.from_checkpoint(path, EngineOptions(), "cpu")
    half = PoseEstimator.from_checkpoint(path, EngineOptions(half=True), "cpu")
    half.model.heads["kpt_heatmap"].register_forward_hook(
        lambda module, args, out: seen.append(out.dtype))
    a, b = full.predict([image], [box])[0][0], half.predict([image], [box])[0][0]
    assert seen and set(seen) == {torch.bfloat16}  # the network really ran in bf16
    sure = (a.keypoints[:, 2] > 0.3) & (b.keypoints[:, 2] > 0.3)
    assert sure.sum() >= 12
    assert np.median(np.abs(a.keypoints[sure, :2] - b.keypoints[sure, :2])) < 2.0
