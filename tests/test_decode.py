"""Heatmap decoding against the official post-processing fixtures (bit-exact)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mipnet_cli.core.keypoints import COCO17
from mipnet_cli.models.decode import (
    decode_dark,
    decode_heatmaps,
    flip_average,
    flip_back,
    get_max_preds,
    quarter_offset,
    shift_right,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=["16x12", "64x48"])
def post(request, reference_dir):
    data = np.load(reference_dir / f"postproc_heatmaps_{request.param}.npz")
    return {k: data[k] for k in data.files}


def test_fixture_covers_the_hard_cases(post):
    kinds = set(np.unique(post["channel_kind"]))
    assert {"gauss", "two_peaks", "border", "negative", "zero", "constant"} <= kinds
    assert (post["n_max_occurrences"] > 1).any()  # ties


@pytest.mark.parametrize("device", DEVICES)
def test_get_max_preds_exact(post, device):
    coords, maxvals = get_max_preds(torch.from_numpy(post["heatmaps"]).to(device))
    assert coords.dtype == torch.float32 and coords.device.type == device
    np.testing.assert_array_equal(coords.cpu().numpy(), post["max_preds"])
    np.testing.assert_array_equal(maxvals.cpu().numpy(), post["maxvals"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("post_process", [True, False])
def test_decode_heatmaps_equals_get_final_preds_exactly(post, device, post_process):
    hm = torch.from_numpy(post["heatmaps"]).to(device)
    preds, maxvals = decode_heatmaps(hm, post["center"], post["scale"], post_process=post_process)
    assert preds.dtype == torch.float32 and preds.device.type == device
    ref = post["final_preds"] if post_process else post["final_preds_nopp"]
    np.testing.assert_array_equal(preds.cpu().numpy(), ref)  # measured max diff: 0.0 px
    np.testing.assert_array_equal(maxvals.cpu().numpy(), post["final_maxvals"])


def test_decode_per_batch_and_with_tensor_boxes(post):
    for b in range(len(post["heatmaps"])):
        preds, _ = decode_heatmaps(torch.from_numpy(post["heatmaps"][b]),
                                   torch.from_numpy(post["center"][b]),
                                   torch.from_numpy(post["scale"][b]))
        np.testing.assert_array_equal(preds.numpy(), post["final_preds"][b])


def test_flip_back_shift_and_average_exact(post):
    n = len(post["flip_back"])
    hm = torch.from_numpy(post["heatmaps"][:n])
    back = flip_back(hm, COCO17.flip_pairs)
    np.testing.assert_array_equal(back.numpy(), post["flip_back"])
    np.testing.assert_array_equal(shift_right(back).numpy(), post["flip_back_shifted"])
    # The fixture averages each heatmap with its own flipped-back copy.
    avg = flip_average(hm, hm, COCO17.flip_pairs)
    np.testing.assert_array_equal(avg.numpy(), post["flip_avg_with_unflipped"])
    assert torch.equal(flip_back(back, COCO17.flip_pairs), hm)


def test_decode_dark_exact(post):
    hm = torch.from_numpy(post["heatmaps"])
    before = hm.clone()
    preds, maxvals = decode_dark(hm, post["center"], post["scale"])
    assert torch.equal(hm, before)  # the official version blurs its argument in place; this doesn't
    np.testing.assert_array_equal(preds.numpy(), post["dark_preds"])  # numpy 2 arithmetic
    np.testing.assert_array_equal(maxvals.numpy(), post["dark_maxvals"])
    # numpy 1 promoted some Taylor terms to float64: 1-ulp differences (15 and 8 coordinates).
    diff = np.abs(preds.numpy() - post["dark_preds_numpy1"])
    assert diff.max() <= 1e-4 and (diff > 0).sum() <= 20
    with pytest.raises(ValueError, match="odd"):
        decode_dark(hm, post["center"], post["scale"], kernel=4)


def test_end_to_end_heatmaps_decode_to_validate_all_preds(reference_dir):
    tensors = torch.load(reference_dir / "mipnet_eval_pipeline_tensors.pt", weights_only=True)
    e2e = json.loads((reference_dir / "mipnet_eval_pipeline.json").read_text())["end_to_end"]
    hm = tensors["e2e_heatmaps"]  # (lambda 0/1, 3 boxes, 17, 32, 24)
    centers = np.broadcast_to(np.asarray(e2e["meta_center"], np.float32), (2, 3, 2))
    scales = np.broadcast_to(np.asarray(e2e["meta_scale"], np.float32), (2, 3, 2))
    preds, maxvals = decode_heatmaps(hm, centers, scales)
    all_preds = np.asarray(e2e["all_preds"], np.float32).reshape(2, 3, 17, 3)
    np.testing.assert_array_equal(preds.numpy(), all_preds[..., :2])
    np.testing.assert_array_equal(maxvals.numpy(), all_preds[..., 2:])


def _gaussian_maps(centres: np.ndarray, h: int = 32, w: int = 24) -> torch.Tensor:
    ys, xs = np.mgrid[0:h, 0:w]
    maps = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.0**2)) for x, y in centres]
    return torch.tensor(np.stack(maps), dtype=torch.float32)


def test_subpixel_peaks_and_identity_boxes():
    true = np.array([[10.3, 12.7], [5.6, 20.2], [17.4, 8.4]])
    hm = _gaussian_maps(true)[None]  # (1, 3, 32, 24)
    # A box mapping heatmap pixels 1:1 to image pixels: scale*200 = (w, h), centre = (w/2, h/2).
    center, scale = np.array([[12.0, 16.0]]), np.array([[24 / 200, 32 / 200]])
    plain, _ = decode_heatmaps(hm, center, scale, post_process=False)
    quarter, _ = decode_heatmaps(hm, center, scale)
    dark, _ = decode_dark(hm, center, scale)
    err = [np.abs(p[0].numpy() - true).max() for p in (plain, quarter, dark)]
    assert err[0] <= 0.5 and err[1] <= 0.25 and err[2] < 1e-3  # measured 0.4, 0.15, 3e-4
    np.testing.assert_array_equal(plain[0].numpy(), np.round(true))


def test_quarter_offset_border_rule():
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 4, 1], hm[0, 0, 4, 2] = 1.0, 0.5  # peak at x = 1: no offset (needs 1 < px)
    hm[0, 0, 3, 1] = 0.25
    coords, _ = get_max_preds(hm)
    assert quarter_offset(hm, coords).tolist() == [[[1.0, 4.0]]]
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 4, 2], hm[0, 0, 4, 3], hm[0, 0, 3, 2] = 1.0, 0.5, 0.3  # x = 2: offset right and up
    coords, _ = get_max_preds(hm)
    assert quarter_offset(hm, coords).tolist() == [[[2.25, 3.75]]]


def test_any_leading_shape_and_dtype(post):
    hm = torch.from_numpy(post["heatmaps"][:2])  # (2, 4, 17, h, w) as (B, L, K, h, w)
    preds, maxvals = decode_heatmaps(hm, post["center"][:2], post["scale"][:2])
    np.testing.assert_array_equal(preds.numpy(), post["final_preds"][:2])
    half, _ = decode_heatmaps(hm.double(), post["center"][:2], post["scale"][:2])
    np.testing.assert_array_equal(half.numpy(), post["final_preds"][:2])
    dark, _ = decode_dark(hm, post["center"][:2], post["scale"][:2])
    np.testing.assert_array_equal(dark.numpy(), post["dark_preds"][:2])
