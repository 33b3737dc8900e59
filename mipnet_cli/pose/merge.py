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
from dataclasses import dataclass, replace

import numpy as np

from ..core.geometry import PIXEL_STD
from ..core.oks import oks_nms
from ..core.results import Pose


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


def recover_poses(own: Sequence[Pose], extra: Sequence[Pose], factor: float, oks_thresh: float,
                  sigmas: np.ndarray) -> list[Pose]:
    """Crowd recovery for one image: `extra` poses (a whole-image network's) with their scores
    × `factor`, merged with `own` (the top-down poses) by greedy OKS-NMS at `oks_thresh`. An
    extra pose that survives is one no top-down pose covers (a person without a box, or the
    occluded person whose top-down pose copied the one in front); it is marked `recovered`
    and has no box (`box_id` -1). Best score first."""
    if not extra:
        return list(own)
    recovered = [replace(p, score=p.score * factor, box_id=-1, recovered=True) for p in extra]
    every = [*own, *recovered]
    kps = np.stack([p.keypoints for p in every])
    scores = np.array([p.score for p in every], np.float64)
    areas = np.array([p.area for p in every], np.float64)
    keep = oks_nms(kps, scores, areas, oks_thresh, sigmas)
    return [every[i] for i in keep]
