"""Skeleton overlays (what is drawn where, secondary marking) and atomic image saving."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mipnet_cli.core.errors import MipnetError
from mipnet_cli.core.keypoints import COCO17, CROWDPOSE14
from mipnet_cli.core.results import Box, Pose
from mipnet_cli.media.images import read_image
from mipnet_cli.media.render import PALETTE, color_for, draw_poses, save_image

OVERLAY_OUT = os.environ.get("MIPNET_OVERLAY_OUT")  # set to a folder to keep the real overlay


def _standing(cx: float, top: float, height: float, conf: float = 0.9) -> np.ndarray:
    """COCO-17 keypoints of an upright person centred on cx, from `top` down `height` pixels."""
    u = height / 8.0
    pts = [
        (0, 0.3), (-0.15, 0.2), (0.15, 0.2), (-0.3, 0.3), (0.3, 0.3),  # head
        (-0.8, 1.3), (0.8, 1.3), (-1.0, 2.6), (1.0, 2.6), (-1.1, 3.8), (1.1, 3.8),  # arms
        (-0.5, 4.2), (0.5, 4.2), (-0.55, 6.0), (0.55, 6.0), (-0.6, 7.8), (0.6, 7.8),  # legs
    ]
    k = np.array([(cx + dx * u, top + dy * u, conf) for dx, dy in pts])
    return k


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 0


def test_palette_is_distinct() -> None:
    colors = [color_for(i) for i in range(40)]
    assert colors[: len(PALETTE)] == list(PALETTE)
    assert len(set(colors)) == 40
    assert all(all(0 <= c <= 255 for c in rgb) for rgb in colors)


def test_drawn_only_above_threshold() -> None:
    img = np.full((200, 300, 3), 128, np.uint8)
    k = _standing(150, 20, 160)
    k[15, 2] = 0.1  # left ankle: below threshold
    k[16] = (250.0, 100.0, 0.2)  # right ankle moved into empty space, below threshold
    before = img.copy()
    out = draw_poses(img, [Pose(keypoints=k, score=0.9, box_id=0, instance=0)], COCO17)
    np.testing.assert_array_equal(img, before)  # the input is left alone
    assert out.shape == img.shape and out.dtype == np.uint8
    changed = _diff(out, img)
    for j in range(15):
        x, y = np.rint(k[j, :2]).astype(int)
        assert changed[y, x], f"keypoint {j} not drawn"
        assert tuple(out[y, x]) == color_for(0)  # a filled dot in the person's colour
    assert not changed[100, 250]
    assert not changed[190:, :].any()  # nothing drawn below the knees' limbs
    # Limbs join drawn joints: the middle of the left forearm is coloured.
    mid = np.rint((k[7, :2] + k[9, :2]) / 2).astype(int)
    assert changed[mid[1], mid[0]]
    # Nothing at all above threshold: the image comes back unchanged.
    k[:, 2] = 0.0
    out = draw_poses(img, [Pose(keypoints=k, score=0.9, box_id=0, instance=0)], COCO17)
    np.testing.assert_array_equal(out, img)


def test_secondary_instances_are_marked() -> None:
    img = np.full((240, 240, 3), 90, np.uint8)
    k = _standing(120, 50, 170)
    primary = draw_poses(img, [Pose(keypoints=k, score=0.9, box_id=0, instance=0)], COCO17)
    second = draw_poses(img, [Pose(keypoints=k, score=0.9, box_id=0, instance=1)], COCO17)
    assert _diff(primary, second).sum() > 200
    color = np.array(color_for(0))
    # Hollow joints: the centre of a secondary joint is not filled with the person colour.
    for j in (5, 6, 11, 12):
        x, y = np.rint(k[j, :2]).astype(int)
        assert (primary[y, x] == color).all()
        assert not (second[y, x] == color).all()
    # Dashed limbs: along the thigh the primary line is solid, the secondary one has gaps.
    a, b = k[11, :2], k[13, :2]
    samples = [np.rint(a + (b - a) * t).astype(int) for t in np.linspace(0.25, 0.75, 25)]
    solid = [bool(_diff(primary, img)[y, x]) for x, y in samples]
    dashed = [bool(_diff(second, img)[y, x]) for x, y in samples]
    assert all(solid) and 0 < sum(dashed) < len(dashed)
    # The λ tag is written above the head, where the primary rendering leaves the image alone.
    head_y = int(k[:5, 1].min())
    region = (slice(max(0, head_y - 40), head_y - 6), slice(90, 150))
    assert not _diff(primary, img)[region].any()
    assert _diff(second, img)[region].sum() > 20


def test_boxes_scores_and_explicit_sizes() -> None:
    img = np.zeros((120, 160, 3), np.uint8)
    box = Box(xyxy=np.array([20.0, 30.0, 140.0, 110.0]), score=0.75, id=3)
    plain = draw_poses(img, [], COCO17, boxes=[box])
    np.testing.assert_array_equal(plain, img)  # boxes are drawn only on request
    boxed = draw_poses(img, [], COCO17, boxes=[box], show_boxes=True)
    assert _diff(boxed, img)[70, 20] and _diff(boxed, img)[30, 80] and not _diff(boxed, img)[70, 80]
    assert _diff(boxed, img)[:28, 15:80].sum() > 20  # the "#3 0.75" label above the box
    k = _standing(80, 10, 100)
    pose = [Pose(keypoints=k, score=0.5, box_id=3, instance=0)]
    scored = draw_poses(img, pose, COCO17, show_scores=True)
    assert _diff(scored, draw_poses(img, pose, COCO17)).sum() > 100
    thin = _diff(draw_poses(img, pose, COCO17, radius=2, thickness=1), img).sum()
    thick = _diff(draw_poses(img, pose, COCO17, radius=6, thickness=4), img).sum()
    assert thick > 1.5 * thin
    # Other keypoint sets, track colours and junk coordinates.
    k14 = np.zeros((14, 3))
    k14[:, :2] = [[40 + 5 * i, 20 + 6 * i] for i in range(14)]
    k14[:, 2] = 1.0
    k14[3] = (np.nan, 1e30, 1.0)
    out = draw_poses(img, [Pose(keypoints=k14, score=1, box_id=0, instance=0, track_id=7)],
                     CROWDPOSE14)
    assert tuple(out[20, 40]) == color_for(7)
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_poses(img[:, :, 0], pose, COCO17)
    with pytest.raises(ValueError, match="do not fit the 14-joint crowdpose skeleton"):
        draw_poses(img, pose, CROWDPOSE14)


def test_save_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    for name in ("a.png", "b.bmp", "sub/c.tif"):
        save_image(tmp_path / name, rgb)
        np.testing.assert_array_equal(read_image(tmp_path / name), rgb)
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 250, 48, dtype=np.uint8)
    smooth[..., 2] = np.linspace(200, 20, 32, dtype=np.uint8)[:, None]
    for name in ("d.webp", "e.jpg"):
        save_image(tmp_path / name, smooth, quality=95)
        assert np.abs(read_image(tmp_path / name).astype(int) - smooth).mean() < 4
    with pytest.raises(MipnetError, match="x.xyz: cannot write images with extension '.xyz'"):
        save_image(tmp_path / "x.xyz", rgb)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a.png", "b.bmp", "d.webp", "e.jpg", "sub"]  # no temporary files left


def test_overlay_of_real_gt_poses(realdata_dir: Path, tmp_path: Path) -> None:
    """GT skeletons of a real COCO photo; one person marked as a secondary instance."""
    root = realdata_dir / "mmpose_tests/coco"
    data = json.loads((root / "test_coco.json").read_text())
    image_id = 197388
    info = next(i for i in data["images"] if i["id"] == image_id)
    img = read_image(root / info["file_name"])
    poses, boxes = [], []
    for ann in data["annotations"]:
        if ann["image_id"] != image_id:
            continue
        k = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        k[:, 2] = (k[:, 2] > 0).astype(float)
        poses.append(Pose(keypoints=k, score=1.0, box_id=ann["id"], instance=len(poses) % 2))
        x, y, w, h = ann["bbox"]
        boxes.append(Box(xyxy=np.array([x, y, x + w, y + h]), source="gt", id=ann["id"]))
    assert len(poses) == 5
    out = draw_poses(img, poses, COCO17, boxes=boxes, show_boxes=True)
    assert out.shape == img.shape == (392, 640, 3)
    changed = _diff(out, img)
    labelled = np.concatenate([p.keypoints[p.keypoints[:, 2] > 0, :2] for p in poses])
    xs, ys = np.clip(np.rint(labelled).astype(int).T, 0, [[639], [391]])
    assert changed[ys, xs].all()
    assert 0.02 < changed.mean() < 0.3
    target = Path(OVERLAY_OUT) if OVERLAY_OUT else tmp_path
    save_image(target / "overlay_197388.png", out)
    assert read_image(target / "overlay_197388.png").shape == img.shape
