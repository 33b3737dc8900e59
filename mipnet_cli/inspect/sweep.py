"""Looking inside the network for one box: continuous λ sweeps and per-instance heatmaps.

`lambda_sweep` runs the soft selectors λ = [a, 1 - a] (a from 1 to 0) through the λ-dependent
part of the network in one batched `forward_multi` call (the flipped crop rides in the same
batch), with the engine's own flip test and decoding, so its end points are the engine's
instance-0 and instance-1 predictions. `box_heatmaps` returns what the engine decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.geometry import affine_matrices, affine_transform_points, warp_crops
from ..models import instance_lambdas
from ..pose.engine import PoseEstimator


@dataclass
class LambdaSweep:
    """Poses of one box along the soft selector λ = a·[1, 0] + (1 - a)·[0, 1]."""

    alphas: np.ndarray  # (L,) from 1 (the box's own person) to 0 (the nearest other)
    lambdas: np.ndarray  # (L, λ-dim) the selector rows fed to the network
    keypoints: np.ndarray  # (L, K, 3) x, y in image pixels, confidence
    center: np.ndarray  # (2,) the crop's centre and scale (official units)
    scale: np.ndarray


@dataclass
class BoxHeatmaps:
    """The heatmaps of boxes for every instance λ of the engine."""

    heatmaps: np.ndarray  # (B, N, K, h, w), flip test applied as configured
    keypoints: np.ndarray  # (B, N, K, 3) decoded, image pixels
    centers: np.ndarray  # (B, 2)
    scales: np.ndarray  # (B, 2)
    lambdas: np.ndarray  # (N, λ-dim)


def sweep_alphas(steps: int) -> np.ndarray:
    """`steps` evenly spaced values of a from 1 to 0 (both included)."""
    if steps < 2:
        raise ValueError("a λ sweep needs at least 2 steps")
    return np.linspace(1.0, 0.0, steps)


@torch.no_grad()
def lambda_sweep(estimator: PoseEstimator, image: np.ndarray, box_xywh: Sequence[float],
                 steps: int = 11) -> LambdaSweep:
    """Keypoints of the box `box_xywh` in the RGB image for `steps` soft λ from [1, 0] to [0, 1].

    The network needs at least two instances; λ rows interpolate its first two one-hot
    selectors.
    """
    model = estimator.model
    if model.config.num_instances < 2:
        raise ValueError("a λ sweep needs a multi-instance network (2 or more instances)")
    alphas = sweep_alphas(steps)
    one_hot = instance_lambdas(model.config.num_instances)
    a = torch.as_tensor(alphas, dtype=torch.float32)[:, None]
    lams = a * one_hot[0] + (1 - a) * one_hot[1]  # (L, λ-dim)
    centers, scales = estimator.boxes_to_center_scale(np.asarray(box_xywh, np.float64))
    crops = estimator.crops([image], centers, scales)
    dtype = torch.float16 if estimator.half else torch.float32
    x = crops.to(dtype)
    flip = estimator.options.flip_test
    batch = torch.cat([x, x.flip(-1)]) if flip else x
    out = model.forward_multi(batch, lams.to(estimator.device, dtype))  # (1 or 2, L, K, h, w)
    merged = (model.flip_merge(out[:1], out[1:], estimator.keypoint_set.flip_pairs) if flip
              else out).float()
    keypoints = estimator.decode(merged, centers, scales)[0]
    return LambdaSweep(alphas, lams.numpy(), keypoints, centers[0], scales[0])


@torch.no_grad()
def box_heatmaps(estimator: PoseEstimator, image: np.ndarray,
                 boxes_xywh: np.ndarray | Sequence[Sequence[float]]) -> BoxHeatmaps:
    """The engine's heatmaps and decoded keypoints for boxes of one RGB image."""
    centers, scales = estimator.boxes_to_center_scale(np.asarray(boxes_xywh, np.float64))
    heatmaps = estimator.heatmaps(estimator.crops([image], centers, scales))
    keypoints = estimator.decode(heatmaps, centers, scales)
    return BoxHeatmaps(heatmaps.cpu().numpy(), keypoints, centers, scales,
                       estimator.lambdas.float().cpu().numpy())


def display_crop(image: np.ndarray, center: np.ndarray, scale: np.ndarray,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The box's crop at `size` (w, h) as RGB uint8 (the region the network sees), and the
    (2, 3) affine matrix that maps image pixels into it."""
    crop = warp_crops([image], center[None], scale[None], size)[0]
    rgb = crop.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(rgb), affine_matrices(center[None], scale[None], size)[0]


def to_crop(keypoints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Keypoints (..., K, 3) from image pixels into a crop (confidence kept)."""
    out = np.array(keypoints, np.float64, copy=True)
    out[..., :2] = affine_transform_points(out[..., :2], matrix)
    return out
