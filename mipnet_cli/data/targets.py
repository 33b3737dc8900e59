"""Gaussian heatmap targets and joint weights, numerically identical to HRNet's `generate_target`.

Sizes are (height, width) throughout this package; joints are (x, y) in input-crop pixels.
"""

from __future__ import annotations

import numpy as np


def gaussian_patch(sigma: float) -> np.ndarray:
    """The unnormalised Gaussian (peak 1) that HRNet pastes, on its float32 grid."""
    radius = sigma * 3
    size = 2 * radius + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, np.newaxis]
    c = size // 2
    return np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma**2))


def generate_target(
    joints: np.ndarray,
    joints_vis: np.ndarray,
    image_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (K, h, w) float32 and weights (K, 1) float32 for one person.

    `joints` is (K, >=2) crop pixels; `joints_vis` is (K,) or (K, >=1) with the visibility in
    column 0. Same rules as the official code, vectorised over joints: the integer centre is
    `int(coord / stride + 0.5)` (truncation toward zero), a joint whose (6σ+1)² window misses
    the map gets weight 0, and the window is pasted only where the weight is > 0.5.
    """
    joints = np.asarray(joints, dtype=np.float64)
    vis = np.asarray(joints_vis, dtype=np.float64)
    vis = vis[:, 0] if vis.ndim == 2 else vis
    num_joints = joints.shape[0]
    hm_h, hm_w = int(heatmap_size[0]), int(heatmap_size[1])
    stride = np.array([image_size[1], image_size[0]], dtype=np.float64) / np.array(
        [hm_w, hm_h], dtype=np.float64
    )
    radius = sigma * 3

    weight = vis.astype(np.float32).reshape(num_joints, 1)
    mu = np.trunc(joints[:, :2] / stride + 0.5)  # Python int(): toward zero
    ul = np.trunc(mu - radius).astype(np.int64)
    br = np.trunc(mu + radius + 1).astype(np.int64)
    outside = (ul[:, 0] >= hm_w) | (ul[:, 1] >= hm_h) | (br[:, 0] < 0) | (br[:, 1] < 0)
    weight[outside, 0] = 0

    g = gaussian_patch(sigma)
    gx = np.arange(hm_w)[None, :] - ul[:, :1]  # (K, w): index into the patch
    gy = np.arange(hm_h)[None, :] - ul[:, 1:]  # (K, h)
    in_x = (gx >= 0) & (gx < g.shape[1]) & (np.arange(hm_w)[None, :] < br[:, :1])
    in_y = (gy >= 0) & (gy < g.shape[0]) & (np.arange(hm_h)[None, :] < br[:, 1:])
    paste = (weight[:, 0] > 0.5) & ~outside
    mask = in_y[:, :, None] & in_x[:, None, :] & paste[:, None, None]
    rows = np.clip(gy, 0, g.shape[0] - 1)[:, :, None]
    cols = np.clip(gx, 0, g.shape[1] - 1)[:, None, :]
    values = g[rows, cols]
    target = np.where(mask, values, np.float32(0)).astype(np.float32, copy=False)
    return target, weight


def generate_targets(
    joints: np.ndarray,
    joints_vis: np.ndarray,
    image_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """`generate_target` for several instances: (N, K, ...) in, (N, K, h, w) and (N, K, 1) out."""
    pairs = [
        generate_target(j, v, image_size, heatmap_size, sigma)
        for j, v in zip(joints, joints_vis, strict=True)
    ]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
