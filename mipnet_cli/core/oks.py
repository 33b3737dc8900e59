"""Object keypoint similarity (OKS) between poses, and the suppressions built on it (greedy
OKS-NMS, Gaussian soft-NMS); numpy, CPU.

Shared by the engine's merge, the single-stage family's decoding and the tracker. The float
types follow the official HRNet/MIPNet code, so keep orders are reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .keypoints import COCO17


def _sigmas(sigmas: Sequence[float] | np.ndarray | None) -> np.ndarray:
    return COCO17.sigmas_array if sigmas is None else np.asarray(sigmas, np.float64)


def oks_iou(
    g: np.ndarray,
    d: np.ndarray,
    area_g: float,
    area_d: np.ndarray | Sequence[float],
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """OKS between one pose ``g`` and poses ``d``: ``(M,)`` float64.

    ``g`` is ``(K, 3)`` or ``(3K,)``, ``d`` is ``(M, K, 3)`` or ``(M, 3K)`` (x, y, confidence).
    ``e = (dx² + dy²) / (2σ)² / ((area_g + area_d) / 2 + eps) / 2`` and OKS = mean of
    ``exp(-e)``; ``sigmas`` default to COCO-17's. With ``in_vis_thre`` only the joints whose
    **detection** (``d``) confidence exceeds it count, as in the official code (its
    ``list(vg > t) and list(vd > t)`` evaluates to the second list); no such joint gives 0.
    """
    var = (_sigmas(sigmas) * 2) ** 2
    gk = np.asarray(g).reshape(-1, 3)
    dk = np.asarray(d).reshape(len(d), gk.shape[0], 3)
    dx = dk[:, :, 0] - gk[:, 0]
    dy = dk[:, :, 1] - gk[:, 1]
    area = (area_g + np.asarray(area_d, np.float64)) / 2 + np.spacing(1)
    e = (dx**2 + dy**2) / var / area[:, None] / 2
    if in_vis_thre is None:
        return np.exp(-e).sum(axis=1) / e.shape[1]
    ious = np.zeros(len(dk))
    for i, (row, sel) in enumerate(zip(e, dk[:, :, 2] > in_vis_thre, strict=True)):
        if sel.any():  # summed over the selected joints alone, as the official code does
            ious[i] = np.sum(np.exp(-row[sel])) / sel.sum()
    return ious


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray | Sequence[float],
    areas: np.ndarray | Sequence[float],
    thresh: float = 0.9,
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """Greedy OKS-NMS over poses ``(N, K, 3)``: the kept indices, in keep order (int64).

    Candidates are visited by descending score (equal scores: the later candidate first, as
    the official reversed argsort does for small lists); each pick suppresses the remaining
    candidates whose OKS with it is > ``thresh``.
    """
    kp = np.asarray(keypoints)
    n = len(kp)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(np.asarray(scores, np.float64), kind="stable")[::-1]
    kpts = kp.reshape(n, -1)
    area = np.asarray(areas, np.float64)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        ovr = oks_iou(kpts[i], kpts[rest], area[i], area[rest], sigmas, in_vis_thre)
        order = rest[ovr <= thresh]
    return np.asarray(keep, np.int64)


def soft_nms(boxes: np.ndarray, scores: np.ndarray, min_score: float = 0.001,
             sigma: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian soft-NMS (Bodla et al., 2017) over boxes (N, 4) x0, y0, x1, y1.

    Repeatedly picks the highest-scoring box and multiplies every remaining score by
    exp(-IoU² / sigma); boxes that fall below `min_score` are dropped. Returns the picked
    indices in pick order and their scores at the time they were picked.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float64).copy()
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    alive = np.arange(len(b))
    keep, kept_scores = [], []
    while alive.size:
        best = alive[np.argmax(s[alive])]
        if s[best] < min_score:
            break
        keep.append(best)
        kept_scores.append(s[best])
        alive = alive[alive != best]
        lt = np.maximum(b[alive, :2], b[best, :2])
        rb = np.minimum(b[alive, 2:], b[best, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        iou = inter / np.maximum(area[alive] + area[best] - inter, 1e-9)
        s[alive] *= np.exp(-(iou**2) / sigma)
        alive = alive[s[alive] >= min_score]
    return np.asarray(keep, np.int64), np.asarray(kept_scores, np.float32)
