"""Heatmaps -> keypoints: argmax decoding, the quarter-pixel offset, flip test and DARK.

Everything works on ``(..., K, H, W)`` heatmaps with any leading shape (``(B, K, H, W)`` from
``model(x, lam)``, ``(B, L, K, H, W)`` from ``model.forward_multi``); ``centers``/``scales`` have
the leading shape plus ``(2,)``. The torch functions run on the heatmaps' device and return
tensors there; coordinates and maxvals are float32, as the official ``all_preds``.

The conventions are those of the official ``lib/core/inference.py`` (HRNet/MIPNet) and are
reproduced exactly, including their float32 roundings (see ``decode_heatmaps``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ..core.geometry import ArrayLike, affine_matrices


def get_max_preds(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer argmax of every heatmap: ``coords (..., K, 2)`` and ``maxvals (..., K, 1)``, float32.

    The first maximum in row-major order wins; ``x = idx % W``, ``y = idx // W``. Coordinates are
    zeroed where the maximum is not > 0; maxvals are returned as they are (possibly <= 0).
    """
    hm = heatmaps.float()
    width = hm.shape[-1]
    maxvals, idx = hm.flatten(-2).max(dim=-1)
    coords = torch.stack([idx % width, torch.div(idx, width, rounding_mode="floor")], dim=-1)
    coords = coords.float() * (maxvals > 0).unsqueeze(-1).float()
    return coords, maxvals.unsqueeze(-1)


def _gather(hm: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``hm[..., y, x]`` per keypoint, for index tensors of shape ``hm.shape[:-2]`` (clamped)."""
    h, w = hm.shape[-2:]
    flat = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(-1)
    return hm.flatten(-2).gather(-1, flat).squeeze(-1)


def quarter_offset(heatmaps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The official ``POST_PROCESS`` step: a quarter-pixel move towards the higher neighbour.

    With ``px = floor(x + 0.5)``, ``py = floor(y + 0.5)`` and only when ``1 < px < W-1`` and
    ``1 < py < H-1`` (strict), ``x += 0.25 * sign(hm[py, px+1] - hm[py, px-1])`` and likewise for
    y, the differences taken in float32 (a tie gives no shift). Returns new float32 coords.
    """
    hm = heatmaps.float()
    h, w = hm.shape[-2:]
    px = torch.floor(coords[..., 0] + 0.5).long()
    py = torch.floor(coords[..., 1] + 0.5).long()
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    dx = _gather(hm, px + 1, py) - _gather(hm, px - 1, py)
    dy = _gather(hm, px, py + 1) - _gather(hm, px, py - 1)
    step = torch.stack([torch.sign(dx), torch.sign(dy)], dim=-1) * 0.25
    return coords + torch.where(inside.unsqueeze(-1), step, torch.zeros_like(step))


def heatmap_to_image(
    coords: torch.Tensor, centers: ArrayLike, scales: ArrayLike, heatmap_size: Sequence[int]
) -> torch.Tensor:
    """Heatmap coordinates ``(..., K, 2)`` -> image pixels, float32 (official ``transform_preds``).

    The inverse crop matrices are built on the CPU (``core.geometry.affine_matrices``, no
    rotation) and applied in float64 on the coordinates' device; the result is rounded to
    float32 as the official code stores it.
    """
    lead = coords.shape[:-2]
    m = affine_matrices(centers, scales, heatmap_size, inv=True).reshape(*lead, 1, 2, 3)
    m = torch.as_tensor(m, dtype=torch.float64, device=coords.device)
    c = coords.to(torch.float64)
    x = m[..., 0, 0] * c[..., 0] + m[..., 0, 1] * c[..., 1] + m[..., 0, 2]
    y = m[..., 1, 0] * c[..., 0] + m[..., 1, 1] * c[..., 1] + m[..., 1, 2]
    return torch.stack([x, y], dim=-1).float()


def decode_heatmaps(
    heatmaps: torch.Tensor,
    centers: ArrayLike,
    scales: ArrayLike,
    post_process: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps -> ``(preds (..., K, 2), maxvals (..., K, 1))`` in image pixels.

    The official ``get_final_preds``: argmax (``get_max_preds``), the quarter-pixel offset when
    ``post_process`` (the official ``TEST.POST_PROCESS``, on by default) and the inverse crop
    transform with each box's ``center``/``scale``. Any float dtype is decoded in float32.
    """
    hm = heatmaps.float()
    coords, maxvals = get_max_preds(hm)
    if post_process:
        coords = quarter_offset(hm, coords)
    preds = heatmap_to_image(coords, centers, scales, (hm.shape[-1], hm.shape[-2]))
    return preds, maxvals


def flip_permutation(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> list[int]:
    """Joint order of a mirrored pose: each left/right pair swapped."""
    perm = list(range(num_joints))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def flip_back(heatmaps: torch.Tensor, flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Undo a horizontal input flip: mirror the width axis, swap the left/right joint channels."""
    perm = flip_permutation(heatmaps.shape[-3], flip_pairs)
    return heatmaps.flip(-1)[..., perm, :, :]


def shift_right(heatmaps: torch.Tensor) -> torch.Tensor:
    """The official ``SHIFT_HEATMAP`` step: columns move one to the right; column 0 is kept."""
    return torch.cat([heatmaps[..., :1], heatmaps[..., :-1]], dim=-1)


def flip_average(
    heatmaps: torch.Tensor,
    heatmaps_flipped: torch.Tensor,
    flip_pairs: Sequence[Sequence[int]],
    shift: bool = True,
) -> torch.Tensor:
    """Flip test: ``(heatmaps + shift_right(flip_back(heatmaps_flipped))) * 0.5``.

    ``heatmaps_flipped`` is the model output for the horizontally flipped crops; ``shift`` is the
    official ``TEST.SHIFT_HEATMAP`` (on in every official config).
    """
    back = flip_back(heatmaps_flipped, flip_pairs)
    if shift:
        back = shift_right(back)
    return (heatmaps + back) * 0.5


def _gaussian_blur(hm: np.ndarray, kernel: int) -> np.ndarray:
    """DARK's blur of float32 ``(N, H, W)`` maps, rounded to float32 and rescaled to each map's max.

    Each map is zero-padded by the kernel radius and blurred with float64 ``cv2.GaussianBlur``
    (sigma from the kernel size). The padded maps are stacked into one tall image: a map's
    padding is exactly one radius wide, so no output pixel reads a neighbouring map.
    """
    border = (kernel - 1) // 2
    n, h, w = hm.shape
    padded = np.zeros((n, h + 2 * border, w + 2 * border), np.float64)
    padded[:, border:-border, border:-border] = hm
    tall = padded.reshape(n * (h + 2 * border), w + 2 * border)
    blurred = cv2.GaussianBlur(tall, (kernel, kernel), 0).reshape(padded.shape)
    out = blurred[:, border:-border, border:-border].astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = hm.max(axis=(1, 2)) / out.max(axis=(1, 2))
    return out * ratio[:, None, None]


def _taylor(logs: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """DARK's Newton step on log heatmaps ``(N, H, W)`` at integer peaks ``coords (N, 2)`` float32.

    Applied where ``1 < px < W-2`` and ``1 < py < H-2`` and the Hessian determinant is non-zero,
    with the official float32 arithmetic (numpy 2 promotion) and a float64 LAPACK inverse.
    """
    n, h, w = logs.shape
    px = coords[:, 0].astype(np.int64)
    py = coords[:, 1].astype(np.int64)
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    i, x, y = np.nonzero(ok)[0], px[ok], py[ok]

    def at(dx: int, dy: int) -> np.ndarray:
        return logs[i, y + dy, x + dx]

    half, quarter, two = np.float32(0.5), np.float32(0.25), np.float32(2)
    gx = half * (at(1, 0) - at(-1, 0))
    gy = half * (at(0, 1) - at(0, -1))
    dxx = quarter * (at(2, 0) - two * at(0, 0) + at(-2, 0))
    dxy = quarter * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    dyy = quarter * (at(0, 2) - two * at(0, 0) + at(0, -2))
    keep = dxx * dyy - dxy**2 != 0
    hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)[keep]
    grad = np.stack([gx, gy], -1)[keep][..., None]
    offset = np.matmul(-np.linalg.inv(hessian), grad)[..., 0]
    out = coords.copy()
    out[i[keep]] += offset
    return out


def decode_dark(
    heatmaps: torch.Tensor,
    centers: ArrayLike,
    scales: ArrayLike,
    kernel: int = 11,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DARK decoding (official ``get_final_preds_dark``); returns as ``decode_heatmaps``.

    Blur each map with a ``kernel``-sized Gaussian (zero padding, rescaled to the original
    maximum), take ``log(max(hm, 1e-10))`` and refine the integer argmax with one Taylor (Newton)
    step. Runs in numpy/OpenCV on the CPU (the blur is OpenCV's, for exactness); the result is
    returned on the heatmaps' device. Unlike the official function it leaves its input intact.
    """
    if kernel < 3 or kernel % 2 == 0:
        raise ValueError(f"the DARK blur kernel must be odd and >= 3, got {kernel}")
    hm = heatmaps.float()
    coords, maxvals = get_max_preds(hm)
    h, w = hm.shape[-2:]
    flat = hm.detach().cpu().numpy().reshape(-1, h, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.maximum(_gaussian_blur(flat, kernel), 1e-10))
    refined = _taylor(logs, coords.cpu().numpy().reshape(-1, 2))
    refined_t = torch.from_numpy(refined.reshape(coords.shape)).to(hm.device)
    return heatmap_to_image(refined_t, centers, scales, (w, h)), maxvals
