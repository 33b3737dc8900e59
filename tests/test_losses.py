"""Heatmap losses against the official MIPNet/HRNet loss values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mipnet_cli.models.losses import (
    joints_mse_loss,
    joints_mse_loss_per_sample,
    lambda_pose_loss,
    multi_instance_loss,
)


@pytest.fixture(scope="module")
def official(reference_dir: Path) -> dict:
    blob = torch.load(reference_dir / "mipnet_eval_pipeline_tensors.pt", weights_only=True)
    return blob["losses"]


def test_joints_mse_loss_equals_official(official: dict) -> None:
    o, t, w = official["output"], official["target_a"], official["target_weight_a"]
    assert (w == 0).any()  # the weights matter in this case
    torch.testing.assert_close(joints_mse_loss(o, t, w), official["joints_mse_loss_a"],
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(joints_mse_loss(o, t), official["joints_mse_loss_a_no_weight"],
                               rtol=1e-6, atol=0)


def test_per_sample_and_pose_loss_equal_official(official: dict) -> None:
    o = official["output"]
    for key in ("a", "b"):
        got = joints_mse_loss_per_sample(o, official[f"target_{key}"],
                                         official[f"target_weight_{key}"])
        assert got.shape == (4,)
        torch.testing.assert_close(got, official[f"joints_lambda_mse_loss_{key}"],
                                   rtol=1e-6, atol=0)
    got = lambda_pose_loss(o, official["target_a"], official["target_weight_a"],
                           official["target_b"], official["target_weight_b"],
                           official["lambda_a"])
    torch.testing.assert_close(got, official["pose_loss"], rtol=1e-6, atol=0)


def test_weights_scale_the_squared_error() -> None:
    out = torch.zeros(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2)
    w = torch.tensor([[[2.0], [0.0]]])
    # joint 0: 0.5 * (2 * 1)² per pixel; joint 1 ignored; mean over 2 joints x 4 pixels
    assert joints_mse_loss(out, target, w).item() == pytest.approx(0.5 * 4 * 4 / 8)
    assert joints_mse_loss(out, target).item() == pytest.approx(0.5)


def test_multi_instance_loss_is_the_official_duplicated_batch() -> None:
    """Equation (1) = train_lambda's loss on the batch run once with λ=[1,0] and once [0,1]."""
    torch.manual_seed(0)
    b, k = 3, 17
    outputs = torch.randn(b, 2, k, 16, 12)  # outputs[:, i]: the model run with λ_i
    targets = torch.rand(b, 2, k, 16, 12)
    weights = (torch.rand(b, 2, k, 1) > 0.3).float()
    got = multi_instance_loss(outputs, targets, weights)

    lam = torch.cat([torch.ones(b), torch.zeros(b)])  # rows 0..b-1 use λ=[1,0]
    stacked = torch.cat([outputs[:, 0], outputs[:, 1]])
    ta, tb = targets[:, 0].repeat(2, 1, 1, 1), targets[:, 1].repeat(2, 1, 1, 1)
    wa, wb = weights[:, 0].repeat(2, 1, 1), weights[:, 1].repeat(2, 1, 1)
    official_style = lambda_pose_loss(stacked, ta, wa, tb, wb, lam)
    torch.testing.assert_close(got, official_style)
    per_instance = torch.stack([joints_mse_loss(outputs[:, i], targets[:, i], weights[:, i])
                                for i in range(2)])
    torch.testing.assert_close(got, per_instance.mean())
    # swapping what instance 1 should learn changes the loss
    swapped = multi_instance_loss(outputs, targets.flip(1), weights.flip(1))
    assert not torch.isclose(got, swapped)
