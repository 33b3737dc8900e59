"""Datasets, multi-instance samples, augmentation and heatmap targets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mipnet_cli.core.errors import MipnetError
from mipnet_cli.core.geometry import box_to_center_scale, get_affine_transform
from mipnet_cli.core.keypoints import COCO17, CROWDPOSE14, KeypointSet
from mipnet_cli.data import AugmentConfig, KeypointDataset, generate_target, generate_targets
from mipnet_cli.data.augment import (
    CropParams,
    apply_crop,
    flip_joints,
    half_body_center_scale,
    sample_crop,
)

NO_AUG_FLIP = AugmentConfig(scale_factor=0.0, rotation_prob=0.0, flip_prob=1.0, half_body_prob=0.0)

SETS = {
    "coco": ("mmpose_tests/coco/test_coco.json", "mmpose_tests/coco"),
    "crowdpose": ("mmpose_tests/crowdpose/test_crowdpose.json", "mmpose_tests/crowdpose"),
    "ochuman": ("mmpose_tests/ochuman/test_ochuman.json", "mmpose_tests/ochuman"),
    "coco_mini": ("coco_mini/annotations/person_keypoints_train2017.json", "coco_mini/train2017"),
}


def _dataset(realdata: Path, name: str, **kw) -> KeypointDataset:
    ann, images = SETS[name]
    return KeypointDataset(realdata / ann, realdata / images, **kw)


def _valid_people(ann_file: Path) -> list[dict]:
    """The annotations a sample is made from, counted straight from the JSON."""
    data = json.loads(ann_file.read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    keep = []
    for a in data["annotations"]:
        if a["iscrowd"] or not any(a["keypoints"]) or a.get("area", 1) <= 0:
            continue
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        if min(width - 1, max(0, x) + max(0, w - 1)) >= max(0, x) and min(
            height - 1, max(0, y) + max(0, h - 1)
        ) >= max(0, y):
            keep.append(a)
    return keep


# ------------------------------------------------------------------ targets
@pytest.mark.parametrize("prefix", ["s2_", "s3_"])
def test_generate_target_equals_official(reference_dir: Path, prefix: str) -> None:
    ref = np.load(reference_dir / "generate_target.npz")
    w, h = (int(v) for v in ref[prefix + "image_size"])
    hw, hh = (int(v) for v in ref[prefix + "heatmap_size"])
    sigma = int(ref[prefix + "sigma"])
    for i in range(len(ref[prefix + "joints"])):
        target, weight = generate_target(
            ref[prefix + "joints"][i], ref[prefix + "joints_vis"][i], (h, w), (hh, hw), sigma
        )
        assert target.dtype == np.float32 and weight.dtype == np.float32
        np.testing.assert_array_equal(target, ref[prefix + "target"][i])
        np.testing.assert_array_equal(weight, ref[prefix + "target_weight"][i])
    # the batched form stacks the same arrays
    targets, weights = generate_targets(
        ref[prefix + "joints"], ref[prefix + "joints_vis"], (h, w), (hh, hw), sigma
    )
    np.testing.assert_array_equal(targets, ref[prefix + "target"])
    np.testing.assert_array_equal(weights, ref[prefix + "target_weight"])


def test_generate_target_hand_cases() -> None:
    joints = np.array([[100.0, 60.0], [100.0, 60.0], [-60.0, 10.0], [-2.0, 10.0]])
    vis = np.array([1.0, 0.0, 1.0, 1.0])
    target, weight = generate_target(joints, vis, (256, 192), (64, 48), 2)
    assert target.shape == (4, 64, 48)
    # visible, inside: peak 1 at int(100/4 + .5) = 25, int(60/4 + .5) = 15, full 13x13 window
    assert target[0, 15, 25] == 1.0 and weight[0, 0] == 1.0
    assert np.count_nonzero(target[0]) == 13 * 13
    # unlabelled: weight 0, empty map
    assert weight[1, 0] == 0.0 and not target[1].any()
    # whole window left of the map: weight 0
    assert weight[2, 0] == 0.0 and not target[2].any()
    # int(-0.5 + 0.5) = 0: centre on column 0, window cut to 7 columns
    assert weight[3, 0] == 1.0 and target[3, 3, 0] == 1.0
    assert np.count_nonzero(target[3].any(axis=0)) == 7


# ------------------------------------------------------------------ augmentation
def test_flip_joints_swaps_left_and_right() -> None:
    joints = np.zeros((2, 17, 2))
    joints[:, :, 0] = np.arange(17) + 10.0
    joints[:, :, 1] = 5.0
    vis = np.ones((2, 17))
    vis[1, 3] = 0  # unlabelled left ear of instance 1
    out, out_vis = flip_joints(joints, vis, 100, COCO17)
    assert COCO17.names[1] == "left_eye" and COCO17.names[2] == "right_eye"
    # the new left eye is the mirrored old right eye, for every instance
    np.testing.assert_array_equal(out[:, 1, 0], 100 - joints[:, 2, 0] - 1)
    np.testing.assert_array_equal(out[:, 0, 0], 100 - joints[:, 0, 0] - 1)  # nose stays
    assert out_vis[1, 4] == 0 and out_vis[1, 3] == 1  # visibility moves with the joint
    np.testing.assert_array_equal(out[1, 4], [0.0, 0.0])


def test_half_body_uses_the_half_with_joints() -> None:
    joints = np.zeros((17, 2))
    vis = np.zeros(17)
    upper = [0, 5, 6, 9]
    joints[upper] = [[50, 10], [40, 30], [60, 30], [70, 50]]
    vis[upper] = 1
    vis[11] = 1  # a single lower-body joint: the lower half never qualifies
    for seed in range(5):
        center, scale = half_body_center_scale(
            joints, vis, COCO17, 0.75, np.random.default_rng(seed)
        )
        np.testing.assert_allclose(center, [55.0, 30.0])
        # extents 30 x 40 already have aspect 0.75; × 1.5 in 200 px units
        np.testing.assert_allclose(scale, [30 / 200 * 1.5, 40 / 200 * 1.5], rtol=1e-6)


def test_sample_crop_distributions() -> None:
    rng = np.random.default_rng(0)
    center, scale = np.array([100.0, 100.0], np.float32), np.array([1.0, 4 / 3], np.float32)
    joints, vis = np.zeros((17, 2)), np.zeros(17)  # no half-body without joints
    crops = [
        sample_crop(center, scale, joints, vis, COCO17, 300, 0.75, AugmentConfig(), rng)
        for _ in range(4000)
    ]
    rot = np.array([c.rotation for c in crops])
    factor = np.array([c.scale[0] for c in crops])
    flips = np.array([c.flipped for c in crops])
    assert abs((rot != 0).mean() - 0.6) < 0.03
    assert np.abs(rot).max() <= 90 and np.abs(rot).max() > 45
    assert factor.min() >= 0.65 - 1e-6 and factor.max() <= 1.35 + 1e-6
    assert abs(flips.mean() - 0.5) < 0.03
    flipped_centres = {float(c.center[0]) for c in crops if c.flipped}
    assert flipped_centres == {300 - 100.0 - 1}


def test_apply_crop_drops_joints_outside() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    crop = CropParams(np.array([100, 100], np.float32), np.array([0.3, 0.4], np.float32))
    joints = np.array([[[100.0, 100.0], [190.0, 100.0], [100.0, 10.0]]])
    vis = np.ones((1, 3))
    keypoints = KeypointSet(
        name="t", names=("a", "b", "c"), skeleton=(), flip_pairs=(), sigmas=(1, 1, 1),
        upper_body=(0,),
    )
    patch, out, out_vis, _ = apply_crop(image, joints, vis, crop, keypoints, (64, 48))
    assert patch.shape == (64, 48, 3)
    np.testing.assert_allclose(out[0, 0], [24.0, 32.0])  # the centre maps to the crop centre
    np.testing.assert_array_equal(out_vis[0], [1, 0, 0])
    np.testing.assert_array_equal(out[0, 1:], 0.0)


# ------------------------------------------------------------------ dataset
@pytest.mark.parametrize("name", list(SETS))
def test_sample_counts_and_shapes(realdata_dir: Path, name: str) -> None:
    ds = _dataset(realdata_dir, name, train=False)
    ann_file = realdata_dir / SETS[name][0]
    expected = _valid_people(ann_file)
    assert len(ds) == len(expected)
    assert sorted(r.ann_id for r in ds.records) == sorted(a["id"] for a in expected)
    k = 14 if name == "crowdpose" else 17
    assert ds.keypoint_set is (CROWDPOSE14 if name == "crowdpose" else COCO17)
    image, targets, weights, meta = ds[len(ds) - 1]
    assert image.shape == (3, 256, 192) and image.dtype == torch.float32
    assert targets.shape == (2, k, 64, 48) and targets.dtype == torch.float32
    assert weights.shape == (2, k, 1) and weights.dtype == torch.float32
    assert meta["ann_ids"].shape == (2,) and meta["fallback"].dtype == torch.bool
    assert meta["ann_ids"][0] == ds.records[len(ds) - 1].ann_id


def test_eval_sample_matches_an_independent_crop(realdata_dir: Path) -> None:
    ds = _dataset(realdata_dir, "coco", train=False)
    data = json.loads((realdata_dir / SETS["coco"][0]).read_text())
    ann = next(a for a in data["annotations"] if a["id"] == 442619)  # the only person in 785
    idx = next(i for i, r in enumerate(ds.records) if r.ann_id == 442619)
    image, targets, weights, meta = ds[idx]

    x, y, w, h = ann["bbox"]
    center, scale = box_to_center_scale([x, y, w - 1, h - 1], 192 / 256)
    trans = get_affine_transform(center, scale, 0, (192, 256))
    bgr = cv2.imread(str(realdata_dir / SETS["coco"][1] / "000000000785.jpg"))
    crop = cv2.warpAffine(bgr, trans, (192, 256), flags=cv2.INTER_LINEAR)[:, :, ::-1]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(
        image.permute(1, 2, 0).numpy(), (crop / 255.0 - mean) / std, atol=1e-5
    )
    kps = np.array(ann["keypoints"], np.float64).reshape(17, 3)
    crop_joints = kps[:, :2] @ trans[:, :2].T + trans[:, 2]
    np.testing.assert_allclose(meta["joints"][0].numpy(), crop_joints, atol=1e-4)
    for k in range(17):  # every heatmap peaks at its joint, as int(x / 4 + 0.5)
        py, px = np.unravel_index(int(targets[0, k].argmax()), (64, 48))
        assert (px, py) == tuple(int(v / 4 + 0.5) for v in crop_joints[k])
    # a single person: instance 1 falls back to B0
    assert meta["fallback"].tolist() == [False, True]
    assert meta["ann_ids"].tolist() == [442619, 442619]
    assert torch.equal(targets[1], targets[0]) and torch.equal(weights[1], weights[0])


def test_instance_assignment_hand_case(realdata_dir: Path) -> None:
    """COCO-MINI image 370162 (11 keypointed people, 2 unlabelled, 1 crowd region)."""
    ds = _dataset(realdata_dir, "coco_mini", train=False, num_instances=3)
    data = json.loads((realdata_dir / SETS["coco_mini"][0]).read_text())
    people = [
        a for a in data["annotations"]
        if a["image_id"] == 370162 and not a["iscrowd"] and any(a["keypoints"])
    ]
    assert len(people) == 11
    centre = {a["id"]: np.array([a["bbox"][0] + a["bbox"][2] / 2,
                                  a["bbox"][1] + a["bbox"][3] / 2]) for a in people}
    idx = next(i for i, r in enumerate(ds.records) if r.ann_id == 1307517)
    # by hand: box [153.1, 145.7, 42.7, 68.6] -> centre (174.5, 180.0); nearest are
    # 1279190 at (203.8, 189.6), d² ≈ 955, then 1262318 at (109.9, 233.3), d² ≈ 7005
    dist = {k: float(((v - centre[1307517]) ** 2).sum()) for k, v in centre.items()}
    by_distance = sorted((d, k) for k, d in dist.items() if k != 1307517)
    assert [k for _, k in by_distance[:2]] == [1279190, 1262318]
    assert [p.ann_id for p in ds.instances(idx)] == [1307517, 1279190, 1262318]

    # in every sample of this image, an instance falls back to B0 iff 3 or fewer of its
    # labelled joints lie inside B0's crop
    kps = {a["id"]: np.array(a["keypoints"], np.float64).reshape(17, 3) for a in people}
    n_fallback = 0
    for i, rec in enumerate(ds.records):
        if rec.image_id != 370162:
            continue
        _, targets, weights, meta = ds[i]
        trans = get_affine_transform(rec.center, rec.scale, 0, (192, 256))
        for n, person in enumerate(ds.instances(i)[1:], start=1):
            labelled = kps[person.ann_id][kps[person.ann_id][:, 2] > 0, :2]
            pts = labelled @ trans[:, :2].T + trans[:, 2]
            inside = int(((pts >= 0) & (pts <= [192, 256])).all(axis=1).sum())
            expect_fallback = inside <= 3
            assert bool(meta["fallback"][n]) == expect_fallback
            expect_id = rec.ann_id if expect_fallback else person.ann_id
            assert int(meta["ann_ids"][n]) == expect_id
            assert float(weights[n].sum()) <= inside or expect_fallback
            if expect_fallback:
                n_fallback += 1
                assert torch.equal(targets[n], targets[0])
    assert 0 < n_fallback < 22  # both outcomes occur in this image


def test_flip_mirrors_every_instance(realdata_dir: Path) -> None:
    plain = _dataset(realdata_dir, "coco_mini", train=False)
    flipped = _dataset(realdata_dir, "coco_mini", train=True, augment=NO_AUG_FLIP)
    idx = next(i for i, r in enumerate(plain.records) if r.ann_id == 1307517)
    _, _, _, meta0 = plain[idx]
    image1, _, _, meta1 = flipped[idx]
    assert meta1["flipped"] and not meta0["fallback"][1]
    perm = COCO17.flip_index()
    j0, v0 = meta0["joints"].numpy(), meta0["joints_vis"].numpy()
    j1, v1 = meta1["joints"].numpy(), meta1["joints_vis"].numpy()
    for n in range(2):  # both instances: left and right swapped, x mirrored in the crop
        np.testing.assert_array_equal(v1[n], v0[n][perm])
        seen = v1[n] > 0
        np.testing.assert_allclose(j1[n][seen, 0], 192 - j0[n][perm][seen, 0], atol=1e-3)
        np.testing.assert_allclose(j1[n][seen, 1], j0[n][perm][seen, 1], atol=1e-3)
    assert meta1["ann_ids"].tolist() == meta0["ann_ids"].tolist()


def test_detection_boxes_for_evaluation(realdata_dir: Path) -> None:
    det_file = realdata_dir / "mmpose_tests/coco/test_coco_det_AP_H_56.json"
    dets = json.loads(det_file.read_text())
    ds = _dataset(realdata_dir, "coco", train=False, boxes=det_file, box_score_threshold=0.3)
    expected = [d for d in dets if d["category_id"] == 1 and d["score"] >= 0.3]
    assert 0 < len(ds) == len(expected) < len(dets)
    image, targets, weights, meta = ds[0]
    assert image.shape == (3, 256, 192) and not weights.any() and not targets.any()
    assert meta["ann_ids"].tolist() == [-1, -1] and meta["score"] == expected[0]["score"]
    center, scale = box_to_center_scale(expected[0]["bbox"], 0.75)
    np.testing.assert_array_equal(meta["center"].numpy(), center)
    np.testing.assert_array_equal(meta["scale"].numpy(), scale)


def test_dataloader_batches_and_seeding(realdata_dir: Path) -> None:
    ds = _dataset(realdata_dir, "crowdpose", train=True)
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=0)
    torch.manual_seed(3)
    a = next(iter(loader))
    torch.manual_seed(3)
    b = next(iter(loader))
    images, targets, weights, meta = a
    assert images.shape == (4, 3, 256, 192)
    assert targets.shape == (4, 2, 14, 64, 48) and weights.shape == (4, 2, 14, 1)
    assert meta["ann_ids"].shape == (4, 2) and meta["center"].shape == (4, 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = next(iter(loader))  # the generator moved on: a different draw
    assert not torch.equal(a[0], c[0])


def test_errors_name_the_file(tmp_path: Path, realdata_dir: Path) -> None:
    with pytest.raises(MipnetError, match="annotation file not found"):
        KeypointDataset(tmp_path / "missing.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(MipnetError, match=r"bad\.json: not valid JSON"):
        KeypointDataset(bad, tmp_path)
    bad.write_text('{"foo": 1}')
    with pytest.raises(MipnetError, match="not a COCO annotation file"):
        KeypointDataset(bad, tmp_path)
    ann = realdata_dir / SETS["coco"][0]
    with pytest.raises(MipnetError, match=r"000000000785\.jpg: image file not found"):
        KeypointDataset(ann, tmp_path)
    with pytest.raises(MipnetError, match="detection file not found"):
        KeypointDataset(ann, realdata_dir / SETS["coco"][1], train=False,
                        boxes=tmp_path / "dets.json")


def test_annotation_clean_up(tmp_path: Path) -> None:
    """HRNet's rules: non-crowd people with keypoints, area > 0, a box left after clipping."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((40, 60, 3), 128, np.uint8))
    kps = [10, 10, 2] + [0, 0, 0] * 15 + [20, 30, 1]
    base = {"image_id": 7, "category_id": 1, "iscrowd": 0, "area": 100.0,
            "bbox": [5, 5, 20, 30], "keypoints": kps}
    anns = [
        {**base, "id": 1},  # kept
        {**base, "id": 2, "bbox": [-5, -5, 20, 30]},  # kept, clipped to the image
        {**base, "id": 3, "iscrowd": 1},
        {**base, "id": 4, "keypoints": [0] * 51},
        {**base, "id": 5, "area": 0.0},
        {**base, "id": 6, "bbox": [70, 5, 20, 30]},  # right of the 60 px wide image
        {**base, "id": 7, "category_id": 2},  # not a person
    ]
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 60, "height": 40}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.names)},
                       {"id": 2, "name": "dog"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    ds = KeypointDataset(path, tmp_path, train=False)
    assert [r.ann_id for r in ds.records] == [1, 2]
    np.testing.assert_array_equal(ds.records[1].vis[[0, 16]], [1, 1])  # v=2 counts as 1
    assert ds.instances(0)[1].ann_id == 2  # the only other person
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(MipnetError, match=r"a\.jpg: cannot read image"):
        ds[0]
    data["annotations"] = [{**base, "id": 1, "keypoints": kps[:-3]}]
    path.write_text(json.dumps(data))
    with pytest.raises(MipnetError, match="annotation 1 has 48 keypoint values, expected 51"):
        KeypointDataset(path, tmp_path)


def test_normalize_image_equals_torchvision() -> None:
    """Exhaustive: the output depends only on (grey level, channel)."""
    from torchvision.transforms import functional as tf

    from mipnet_cli.data.dataset import normalize_image

    levels = np.tile(np.arange(256, dtype=np.uint8)[:, None, None], (1, 2, 3))
    levels[:, 1] = levels[::-1, 0]  # channels see every level in both columns
    expected = tf.normalize(tf.to_tensor(levels), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    got = normalize_image(levels)
    assert got.dtype == torch.float32 and got.shape == (3, 256, 2)
    assert torch.equal(got, expected)


def test_color_jitter() -> None:
    from mipnet_cli.data.augment import color_jitter

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)
    assert np.array_equal(color_jitter(image, 0.0, rng), image)
    changed = [color_jitter(image, 0.4, rng) for _ in range(5)]
    assert all(c.dtype == np.uint8 and c.shape == image.shape for c in changed)
    assert len({round(float(c.mean()), 3) for c in changed}) == 5
