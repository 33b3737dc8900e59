"""Heatmap losses: HRNet's JointsMSELoss, MIPNet's per-sample variant and the multi-instance loss.

All weights multiply both prediction and target before the squared difference, as the
official code does, so a joint weight w scales that joint's error by w².
"""

from __future__ import annotations

import torch


def _weighted_sq_error(
    output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None
) -> torch.Tensor:
    """0.5 * ((output - target) * w)² flattened to (B, K, h*w)."""
    b, k = output.shape[:2]
    diff = output.reshape(b, k, -1) - target.reshape(b, k, -1)
    if target_weight is not None:
        diff = diff * target_weight.reshape(b, k, 1)
    return 0.5 * diff.square()


def joints_mse_loss(
    output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """HRNet `JointsMSELoss`: 0.5 × MSE per joint, averaged over joints (a scalar).

    output, target: (B, K, h, w); target_weight: (B, K, 1) or None for no weighting.
    """
    return _weighted_sq_error(output, target, target_weight).mean()


def joints_mse_loss_per_sample(
    output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """MIPNet `JointsLambdaMSELoss`: the same loss kept per sample, shape (B,)."""
    return _weighted_sq_error(output, target, target_weight).mean(dim=(1, 2))


def lambda_pose_loss(
    output: torch.Tensor,
    target_a: torch.Tensor,
    weight_a: torch.Tensor,
    target_b: torch.Tensor,
    weight_b: torch.Tensor,
    lambda_a: torch.Tensor,
) -> torch.Tensor:
    """MIPNet `train_lambda` pose loss for a batch run with λ = [lambda_a, 1 - lambda_a].

    mean(loss_a · λ_a) + mean(loss_b · (1 - λ_a)), where loss_x is the per-sample loss against
    the primary (a) or secondary (b) target.
    """
    lam = lambda_a.reshape(-1).to(output.dtype)
    loss_a = joints_mse_loss_per_sample(output, target_a, weight_a)
    loss_b = joints_mse_loss_per_sample(output, target_b, weight_b)
    return (loss_a * lam).mean() + (loss_b * (1 - lam)).mean()


def multi_instance_loss(
    outputs: torch.Tensor, targets: torch.Tensor, target_weights: torch.Tensor
) -> torch.Tensor:
    """MIPNet equation (1): weighted heatmap MSE of every instance, averaged over instances.

    outputs, targets: (B, N, K, h, w), where outputs[:, i] is the model run with λ_i;
    target_weights: (B, N, K, 1). Averaged over the batch as well (a scalar).
    """
    b, n = outputs.shape[:2]
    flat = (b * n, *outputs.shape[2:])
    per = joints_mse_loss_per_sample(
        outputs.reshape(flat), targets.reshape(flat), target_weights.reshape(b * n, -1, 1)
    )
    return per.mean()
