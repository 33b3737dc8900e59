"""Targets and loss of the single-stage pose regression network (the paper's eq. 9).

For each image the people with at least `MIN_JOINTS` labelled joints are assigned to one
pyramid level by the longer side of their pseudo box (the box that tightly encloses their
labelled joints). Positive locations are, with centre sampling, those of that level within
`radius` strides of the pseudo box's centre (and inside the person's box); without it, all the
level's locations inside the person's box (FCOS). A location claimed by several people goes to
the smallest. Loss terms:

- classification: sigmoid focal loss over all locations, divided by the positives;
- regression: Smooth L1 of the labelled joints' offsets, in strides, at the positives; the
  refined (second-stage) pose only where the first-stage pose passes the OKS-Filter (max OKS
  with the image's people ≥ `oks_filter`), weighted by that max OKS;
- quality: BCE of the PSM logit against the final pose's max OKS (detached), or of the
  centerness logit against FCOS centerness of the location in the pseudo box;
- heatmap (P3, training only): penalty-reduced focal loss against Gaussian joint maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from .pfs import STRIDES, DenseOutputs, level_of

MIN_JOINTS = 3


@dataclass(frozen=True)
class LossSettings:
    """The ablation switches of Table 1 and 2 and their constants."""

    center_sampling: bool = True
    radius: float = 1.5  # strides around the pseudo box centre
    heatmap: bool = True
    quality: str = "psm"  # "psm" | "centerness" | "none"
    oks_filter: float = 0.3
    heatmap_sigma: float = 1.0  # P3 cells
    smooth_l1_beta: float = 0.1  # strides


def oks_matrix(poses: torch.Tensor, people: torch.Tensor, areas: torch.Tensor,
               sigmas: torch.Tensor) -> torch.Tensor:
    """OKS (P, M) of poses (P, K, 2) with people (M, K, 3) of areas (M,), labelled joints only."""
    d2 = ((poses[:, None] - people[None, :, :, :2]) ** 2).sum(-1)  # (P, M, K)
    var = (2 * sigmas) ** 2
    e = d2 / (2 * var * (areas[None, :, None] + 1e-9))
    vis = (people[..., 2] > 0).float()[None]
    return (torch.exp(-e) * vis).sum(-1) / vis.sum(-1).clamp(min=1)


def assign(out: DenseOutputs, people: torch.Tensor, boxes: torch.Tensor, count: int,
           settings: LossSettings) -> torch.Tensor:
    """For one image: the index of the person each location learns (A,), -1 for negatives."""
    a = out.locations.shape[0]
    owner = torch.full((a,), -1, dtype=torch.long, device=people.device)
    best = torch.full((a,), float("inf"), device=people.device)
    loc = out.locations
    for m in range(count):
        vis = people[m, :, 2] > 0
        if int(vis.sum()) < MIN_JOINTS:
            continue
        xy = people[m, vis, :2]
        lo, hi = xy.amin(0), xy.amax(0)
        level = level_of(float((hi - lo).max()), len(out.levels))
        box = boxes[m]
        if settings.center_sampling:
            c = (lo + hi) / 2
            r = settings.radius * STRIDES[level]
            x0, y0 = torch.maximum(c - r, box[:2]).unbind()
            x1, y1 = torch.minimum(c + r, box[2:]).unbind()
        else:
            x0, y0, x1, y1 = box.unbind()
        inside = ((loc[:, 0] >= x0) & (loc[:, 0] <= x1) & (loc[:, 1] >= y0) & (loc[:, 1] <= y1)
                  & (out.strides == STRIDES[level]))
        if settings.center_sampling and not inside.any():  # a tiny person: its nearest cell
            d = ((loc - (lo + hi) / 2) ** 2).sum(-1) + (out.strides != STRIDES[level]) * 1e12
            inside = torch.zeros_like(inside)
            inside[d.argmin()] = True
        area = float(((hi - lo) + 1).prod())
        take = inside & (area < best)
        owner[take] = m
        best[take] = area
    return owner


def _centerness(loc: torch.Tensor, people: torch.Tensor) -> torch.Tensor:
    """FCOS centerness of locations (P, 2) in the pseudo boxes of their people (P, K, 3)."""
    vis = people[..., 2:] > 0
    big = torch.finfo(people.dtype).max
    lo = torch.where(vis, people[..., :2], big).amin(1)
    hi = torch.where(vis, people[..., :2], -big).amax(1)
    left, top = (loc - lo).clamp(min=0).unbind(-1)
    right, bottom = (hi - loc).clamp(min=0).unbind(-1)
    lr = torch.minimum(left, right) / torch.maximum(left, right).clamp(min=1e-6)
    tb = torch.minimum(top, bottom) / torch.maximum(top, bottom).clamp(min=1e-6)
    return (lr * tb).sqrt()


def _heatmap_targets(people: torch.Tensor, counts: list[int], shape: tuple[int, ...],
                     sigma: float) -> torch.Tensor:
    """(B, K, h, w) Gaussian joint maps at stride 8 (max over people)."""
    b, k, h, w = shape
    ys = torch.arange(h, device=people.device).view(1, h, 1).float()
    xs = torch.arange(w, device=people.device).view(1, 1, w).float()
    target = torch.zeros(shape, device=people.device)
    for i in range(b):
        for m in range(counts[i]):
            vis = people[i, m, :, 2] > 0
            if not vis.any():
                continue
            cx = (people[i, m, vis, 0] - 3.5) / 8  # cell centres at 8 j + 3.5 (level_locations)
            cy = (people[i, m, vis, 1] - 3.5) / 8
            g = torch.exp(-((xs - cx.view(-1, 1, 1)) ** 2 + (ys - cy.view(-1, 1, 1)) ** 2)
                          / (2 * sigma**2))
            target[i, vis] = torch.maximum(target[i, vis], g)
    return target


def _heatmap_focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, divided by the number of peaks."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    peak = target > 0.99
    pos = -torch.log(p) * (1 - p) ** 2 * peak
    neg = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * ~peak
    return (pos.sum() + neg.sum()) / peak.sum().clamp(min=1)


def pfs_loss(out: DenseOutputs, people: torch.Tensor, boxes: torch.Tensor,
                    areas: torch.Tensor, counts: list[int], sigmas: torch.Tensor,
                    settings: LossSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss of a batch and its terms (floats, for the log)."""
    b = people.shape[0]
    owners = torch.stack([assign(out, people[i], boxes[i], counts[i], settings)
                          for i in range(b)])
    pos = owners >= 0
    num_pos = max(int(pos.sum()), 1)
    terms: dict[str, torch.Tensor] = {}
    terms["cls"] = sigmoid_focal_loss(out.cls, pos.float(), reduction="sum") / num_pos
    zero = out.cls.sum() * 0
    reg1, reg2, quality = zero, zero, zero
    for i in range(b):
        idx = torch.flatten(torch.nonzero(pos[i]))
        if len(idx) == 0:
            continue
        target = people[i, owners[i, idx]]  # (P, K, 3)
        vis = (target[..., 2] > 0).float()
        stride = out.strides[idx].view(-1, 1, 1)

        def l1(pred: torch.Tensor, weight: torch.Tensor, target=target, vis=vis,
               stride=stride) -> torch.Tensor:
            err = F.smooth_l1_loss(pred / stride, target[..., :2] / stride, reduction="none",
                                   beta=settings.smooth_l1_beta).sum(-1)
            return (err * vis * weight[:, None]).sum() / vis.sum().clamp(min=1)

        s1 = out.stage1[i, idx]
        reg1 = reg1 + l1(s1, torch.ones(len(idx), device=s1.device))
        m = counts[i]
        final = out.keypoints[i, idx]
        if out.keypoints is not out.stage1:
            with torch.no_grad():
                oks1 = oks_matrix(s1, people[i, :m], areas[i, :m], sigmas).amax(1)
            reg2 = reg2 + l1(final, oks1 * (oks1 >= settings.oks_filter))
        if settings.quality == "psm":
            with torch.no_grad():
                oks = oks_matrix(final, people[i, :m], areas[i, :m], sigmas).amax(1)
            quality = quality + F.binary_cross_entropy_with_logits(out.quality[i, idx], oks)
        elif settings.quality == "centerness":
            c = _centerness(out.locations[idx], target)
            quality = quality + F.binary_cross_entropy_with_logits(out.quality[i, idx], c)
    terms["reg"] = reg1 / b
    if out.keypoints is not out.stage1:
        terms["refine"] = reg2 / b
    if settings.quality != "none":
        terms["quality"] = quality / b
    if settings.heatmap and out.heatmap is not None:
        target = _heatmap_targets(people, counts, tuple(out.heatmap.shape),
                                  settings.heatmap_sigma)
        terms["heatmap"] = _heatmap_focal(out.heatmap.float(), target)
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()} | {
        "positives": float(pos.sum())}
