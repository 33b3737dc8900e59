"""Merging the poses of one image: OKS, OKS-NMS, instance decay and rescoring (numpy, CPU).

MIPNet predicts, for every person box, one pose per instance: instance 0 (lambda ``[1, 0]``) is the
box's own person, instance 1 (lambda ``[0, 1]``) the nearest other person. ``merge_instances``
reproduces the official ``evaluate_lambda`` (``lib/dataset/coco.py``) for the candidates of one
image: secondary instances' box scores are decayed, every candidate is rescored by its mean
confident keypoint score, and the merged list goes through greedy OKS-NMS. The float types
follow the official code, so scores and keep order are reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import PIXEL_STD
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


def keypoint_scores(keypoints: np.ndarray, in_vis_thre: float = 0.2) -> np.ndarray:
    """Mean confidence of the joints whose confidence is strictly above ``in_vis_thre``; 0 if none.

    ``keypoints`` is ``(N, K, 3)``. Summed joint by joint in float32, as the official loop does,
    so the result (float32) is bit-identical to its ``keypoint_score``.
    """
    conf = np.asarray(keypoints, np.float32)[..., 2]
    valid = conf > in_vis_thre
    total = np.zeros(conf.shape[:-1], np.float32)
    for j in range(conf.shape[-1]):
        total = total + np.where(valid[..., j], conf[..., j], np.float32(0))
    count = valid.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / count.astype(np.float32), np.float32(0))


def box_areas(scales: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Box areas ``prod(scale * 200)`` as the official validation computes them (in float32)."""
    s = np.asarray(scales, np.float32) * np.float32(PIXEL_STD)
    return np.prod(s, axis=-1).astype(np.float64)


@dataclass
class MergeResult:
    """The outcome of ``merge_instances`` for one image (all arrays indexed like its inputs)."""

    keep: np.ndarray  # (P,) int64: the surviving candidates, in output (descending score) order
    scores: np.ndarray  # (N,) float64: keypoint_score * box_score
    keypoint_scores: np.ndarray  # (N,) float32
    box_scores: np.ndarray  # (N,) float64: after the instance decay


def merge_instances(
    keypoints: np.ndarray,
    box_scores: np.ndarray | Sequence[float],
    areas: np.ndarray | Sequence[float],
    instances: np.ndarray | Sequence[int],
    *,
    sigmas: Sequence[float] | np.ndarray | None = None,
    decay: float = 0.5,
    in_vis_thre: float = 0.2,
    oks_thresh: float = 0.9,
    pose_scores: np.ndarray | Sequence[float] | None = None,
) -> MergeResult:
    """Merge the candidate poses of one image, as the official ``evaluate_lambda``.

    - ``keypoints`` ``(N, K, 3)`` (x, y, maxval in image pixels; float32 as the decoder gives),
      ``box_scores`` ``(N,)`` detector scores (1 for ground-truth boxes), ``areas`` ``(N,)``
      (``box_areas(scales)``), ``instances`` ``(N,)``: 0 for the box's own person, 1 for the
      secondary person (more instances are allowed).
    - Box scores of instances > 0 are multiplied by ``decay`` (``TEST.DECAY_THRE``, 0.5; pass 1.0
      for scores that are decayed already); ``score = keypoint_scores(...) * box_score``.
    - Ordering convention: NMS visits the candidates in the official merged-list order, which is
      all instance-1 rows ("mode 0", lambda_a = 0) then all instance-0 rows ("mode 1"), each in
      input order (further instances first, by descending index); this only decides between
      equal scores. ``keep`` indexes the inputs and lists the survivors by descending score.

    - ``pose_scores`` ``(N,)``, when given, are learned pose scores (a PSM's predicted OKS)
      that take the place of the keypoint rescoring: ``score = pose_score * box_score``.

    Restricting the inputs to one instance gives the official per-mode ("mode0"/"mode1") lists.
    """
    kp = np.asarray(keypoints)
    inst = np.asarray(instances, np.int64).reshape(len(kp))
    box = np.asarray(box_scores, np.float64).reshape(len(kp))
    box = np.where(inst > 0, box * decay, box)
    kpt = keypoint_scores(kp, in_vis_thre)
    quality = kpt if pose_scores is None else np.asarray(pose_scores).reshape(len(kp))
    scores = quality.astype(np.float64) * box
    visit = np.argsort(-inst, kind="stable")
    area = np.asarray(areas, np.float64).reshape(len(kp))
    keep = oks_nms(kp[visit], scores[visit], area[visit], oks_thresh, sigmas)
    return MergeResult(visit[keep], scores, kpt, box)


def group_by_image(image_ids: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Row indices per image, images in order of first appearance, rows in input order."""
    ids = np.asarray(image_ids)
    if ids.size == 0:
        return []
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    groups = np.argsort(first)  # unique ids ranked by first appearance
    rank = np.empty_like(groups)
    rank[groups] = np.arange(len(groups))
    row_rank = rank[inverse.reshape(-1)]
    order = np.argsort(row_rank, kind="stable")
    return np.split(order, np.cumsum(np.bincount(row_rank))[:-1])
