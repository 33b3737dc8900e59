"""Box geometry against the official fixtures (affine_transforms.npz) and OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mipnet_cli.core.geometry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    affine_matrices,
    affine_transform_points,
    box_to_center_scale,
    get_affine_transform,
    transform_preds,
    warp_crops,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CV2_MAJOR = int(cv2.__version__.split(".")[0])


@pytest.fixture(scope="module")
def aff(reference_dir):
    return dict(np.load(reference_dir / "affine_transforms.npz"))


def _xywh2cs_scalar(x, y, w, h, aspect_ratio, padding=1.25):
    """The official per-box recipe, written out scalar by scalar as the test oracle."""
    center = np.zeros(2, np.float32)
    center[0] = x + w * 0.5
    center[1] = y + h * 0.5
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w * 1.0 / 200, h * 1.0 / 200], dtype=np.float32)
    return center, scale * padding


def test_box_to_center_scale_is_bit_identical_to_the_official_recipe():
    rng = np.random.default_rng(0)
    boxes = np.concatenate([
        rng.uniform(0, 600, (200, 4)),
        [[10, 20, 96, 128], [0, 0, 300, 10], [5.5, 7.25, 3, 400], [0, 0, 0, 0]],
    ])
    for ar in (192 / 256, 288 / 384, 1.0):
        centers, scales = box_to_center_scale(boxes, ar)
        assert centers.dtype == np.float32 and scales.dtype == np.float32
        for b, c, s in zip(boxes, centers, scales, strict=True):
            c_ref, s_ref = _xywh2cs_scalar(*b, ar)
            np.testing.assert_array_equal(c, c_ref)
            np.testing.assert_array_equal(s, s_ref)
    centers, scales = box_to_center_scale([10, 20, 96, 128], 0.75)
    np.testing.assert_allclose(centers, [58, 84])
    np.testing.assert_allclose(scales, [0.6, 0.8], rtol=1e-6)


def test_get_affine_transform_equals_fixture_exactly(aff):
    for i in range(len(aff["trans"])):
        t = get_affine_transform(aff["center"][i], aff["scale"][i], aff["rot"][i],
                                 aff["output_size"][i], aff["shift"][i], bool(aff["inv"][i]))
        np.testing.assert_array_equal(t, aff["trans"][i])


@pytest.mark.parametrize("inv", [False, True])
def test_vectorised_affine_matrices_equal_fixture_exactly(aff, inv):
    sel = aff["inv"].astype(bool) == inv
    m = affine_matrices(aff["center"][sel], aff["scale"][sel], aff["output_size"][sel],
                        aff["rot"][sel], aff["shift"][sel], inv=inv)
    np.testing.assert_array_equal(m, aff["trans"][sel])


def test_vectorised_affine_matrices_equal_cv2_on_random_boxes():
    rng = np.random.default_rng(1)
    n = 300
    centers = rng.uniform(-100, 1500, (n, 2)).astype(np.float32)
    scales = rng.uniform(0.01, 5, (n, 2)).astype(np.float32)
    rots = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(-180, 180, n))
    shifts = np.where(rng.random((n, 1)) < 0.3, rng.normal(0, 0.2, (n, 2)), 0).astype(np.float32)
    for inv in (False, True):
        m = affine_matrices(centers, scales, (48, 64), rots, shifts, inv=inv)
        ref = np.stack([get_affine_transform(c, s, r, (48, 64), sh, inv)
                        for c, s, r, sh in zip(centers, scales, rots, shifts, strict=True)])
        np.testing.assert_array_equal(m, ref)
    zero = affine_matrices([[5, 5]], [[0, 0]], (48, 64))  # degenerate box, as OpenCV: all zero
    np.testing.assert_array_equal(zero, np.zeros((1, 2, 3)))


def test_affine_transform_points_equal_fixture(aff):
    out = affine_transform_points(aff["points"], aff["trans"])
    np.testing.assert_array_equal(out, aff["points_transformed"])


def test_transform_preds_equals_fixture(aff):
    out = transform_preds(aff["tp_coords"], aff["tp_center"], aff["tp_scale"],
                          aff["tp_output_size"])
    np.testing.assert_array_equal(out, aff["tp_out"])
    one = transform_preds(aff["tp_coords"][3], aff["tp_center"][3], aff["tp_scale"][3],
                          aff["tp_output_size"][3])
    np.testing.assert_array_equal(one, aff["tp_out"][3])


@pytest.mark.parametrize("device", DEVICES)
def test_warp_crops_match_fixture_crops(aff, device):
    img = aff["crop_image"]
    sizes = {tuple(s) for s in aff["crop_output_size"]}
    assert sizes == {(48, 64)}
    for image in (img, torch.from_numpy(img).permute(2, 0, 1).to(device)):
        crops = warp_crops(image, aff["crop_center"], aff["crop_scale"], (48, 64), aff["crop_rot"],
                           device=device)
        assert crops.shape == (3, 3, 64, 48) and crops.dtype == torch.float32
        got = crops.permute(0, 2, 3, 1).cpu().numpy()
        diff5 = np.abs(got - aff["crops"])  # OpenCV 5.0 output
        diff4 = np.abs(got - aff["crops_cv2_4_10"])  # OpenCV 4.10 output
        assert diff5.max() <= 1 and diff4.max() <= 2  # measured: 1 and 2
        assert (diff5 > 0).mean() < 0.01  # measured: 179 of 27648 values (0.65 %)


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    noise = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2) * 4 - 382, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("device", DEVICES)
def test_warp_crops_match_cv2_at_many_rotations_and_scales(device):
    rng = np.random.default_rng(2)
    img = _smooth_image(rng, 90, 130)
    rots = [0.0, 30.0, -45.0, 90.0, 180.0, 12.3, -170.0]
    centers = rng.uniform(-10, 140, (len(rots), 2)).astype(np.float32)
    scales = rng.uniform(0.1, 0.9, (len(rots), 2)).astype(np.float32)
    got = warp_crops(img, centers, scales, (24, 32), rots, quantize=False, device=device)
    got = got.permute(0, 2, 3, 1).cpu().numpy()
    for i, r in enumerate(rots):
        trans = get_affine_transform(centers[i], scales[i], r, (24, 32))
        ref = cv2.warpAffine(img, trans, (24, 32), flags=cv2.INTER_LINEAR)
        assert np.abs(got[i] - ref).max() <= (0.51 if CV2_MAJOR >= 5 else 1.5)


@pytest.mark.skipif(CV2_MAJOR < 5, reason="OpenCV 4 samples at 1/32-pixel fixed-point positions")
def test_warp_crops_on_noise_images_from_several_images_match_cv2():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8),
              rng.integers(0, 256, (140, 70, 3), dtype=np.uint8)]
    n = 10
    index = rng.integers(0, 2, n)
    centers = rng.uniform(-10, 140, (n, 2)).astype(np.float32)
    scales = rng.uniform(0.1, 0.9, (n, 2)).astype(np.float32)
    rots = rng.uniform(-180, 180, n)
    raw = warp_crops(images, centers, scales, (24, 32), rots, index, quantize=False)
    rounded = warp_crops(images, centers, scales, (24, 32), rots, index)
    for i in range(n):
        trans = get_affine_transform(centers[i], scales[i], rots[i], (24, 32))
        ref = cv2.warpAffine(images[index[i]], trans, (24, 32), flags=cv2.INTER_LINEAR)
        assert np.abs(raw[i].permute(1, 2, 0).numpy() - ref).max() <= 0.51  # measured 0.5004
        assert np.abs(rounded[i].permute(1, 2, 0).numpy() - ref).max() <= 1


def test_warp_crops_normalise_bgr_and_empty():
    rng = np.random.default_rng(4)
    img = _smooth_image(rng, 50, 40)
    c, s = box_to_center_scale([[5, 5, 20, 30], [0, 10, 35, 25]], 0.75)
    plain = warp_crops(img, c, s, (12, 16))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    norm = warp_crops(img, c, s, (12, 16), normalize=True)
    torch.testing.assert_close(norm, (plain / 255.0 - mean) / std, rtol=0, atol=0)
    bgr = warp_crops(np.ascontiguousarray(img[:, :, ::-1]), c, s, (12, 16), bgr=True)
    torch.testing.assert_close(bgr, plain, rtol=0, atol=0)
    as_float = warp_crops(torch.from_numpy(img).float(), c, s, (12, 16))
    assert torch.equal(plain, torch.round(as_float))
    empty = warp_crops(img, np.zeros((0, 2)), np.zeros((0, 2)), (12, 16))
    assert empty.shape == (0, 3, 16, 12)
    with pytest.raises(ValueError, match="ambiguous"):
        warp_crops(np.zeros((3, 8, 3), np.uint8), c, s, (12, 16))
    with pytest.raises(ValueError, match="image_index"):
        warp_crops([img], c, s, (12, 16), image_index=[0, 1])
