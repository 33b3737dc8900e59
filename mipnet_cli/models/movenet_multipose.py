"""MoveNet MultiPose (Google, 2021): the whole image in, every person's pose out, no detector.

The network is MoveNet's (MobileNetV2 ×1.5 + FPN to stride 4) with two more CenterNet heads,
the person box's size and centre offset. Its decoding is ours, batched on the device and with
no cap of six people: person centres are the 5×5 local maxima of the centre heatmap (the best
`max_people`); each person's box comes from the box heads at its centre, its joints are
regressed from the centre, and every joint is the peak of its heatmap weighted by
exp(-d² / (0.3 · min(h, w))) (d the distance in cells to the regressed joint) inside the box,
refined by the offset head. A joint's score is the best weighted value at its cell over all the
people; a person's score is the centre score times the mean of its joint scores above 0.127.
With `max_people = 6` this is the published graph's own `1×6×56` output.

As a `PoseNet`, the input is the whole image, letterboxed to a square whose side (any multiple
of 32) is the configuration's `image_size`; the output is the dense head maps, which the flip
test averages with those of the mirrored image before decoding.

On top of the published network, the cascade of "Multi-Person Pose Regression via Pose
Filtering and Scoring" (Miao et al.) can be learned with the network frozen (`PoseHeads`):
the FPN features are sampled at each decoded pose's own joints (a deformable sampling whose
points are the first-stage joints); a refinement stage regresses each joint's correction from
them (trained only on first-stage poses that pass the OKS-Filter), and a pose scoring module
(PSM) predicts the OKS of the refined pose, which becomes its score. `config.feature_align`
switches the refinement on, `config.quality_score` the PSM; `config.soft_nms` adds Gaussian
soft-NMS on the people's boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.oks import soft_nms
from .config import ModelConfig
from .decode import flip_permutation, heatmap_to_image
from .movenet import FPN_CHANNELS, HEAD_CHANNELS, MoveNet
from .pose import Candidates

MULTIPOSE_HEADS = {**HEAD_CHANNELS, "box_scale": 2, "box_offset": 2}
# The published graph's constants, as it stores them (float16 values).
INPUT_SCALE = float(np.float16(1 / 127.5))
CENTRE_POOL = 5  # centre peaks are the maxima of their 5×5 neighbourhood
PEAK_TOLERANCE = 1.013279e-06
DISTANCE_SCALE = float(np.float16(0.3))  # of the heatmap's shorter side
JOINT_THRESH = float(np.float16(0.127))  # joints that count in the person score
PSEUDO_AREA = 0.53  # COCO segmentation area ≈ 0.53 × box area (the OKS scale)


def _slices() -> dict[str, slice]:
    """Channel ranges of the heads in the concatenated output maps."""
    out, start = {}, 0
    for name, channels in MULTIPOSE_HEADS.items():
        out[name] = slice(start, start + channels)
        start += channels
    return out


CHANNELS = _slices()
MAPS = sum(MULTIPOSE_HEADS.values())  # 90 channels of head maps; the FPN features follow
FEATURES = FPN_CHANNELS[-1]


class PoseHeads(nn.Module):
    """The learned cascade on a frozen MultiPose: joint corrections (refinement) and the
    predicted OKS (PSM) of each decoded pose, from the FPN features at its own joints."""

    def __init__(self, joints: int, refine: bool, psm: bool, hidden: int = 128) -> None:
        super().__init__()
        self.joints = joints
        width = joints * (FEATURES + 3) + 3  # features, joint score, (y, x) / box; centre, box

        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, out))

        self.refine = mlp(2 * joints) if refine else None
        if self.refine is not None:
            nn.init.zeros_(self.refine[-1].weight)  # starts as the published poses
            nn.init.zeros_(self.refine[-1].bias)
        self.psm = mlp(1) if psm else None

    @staticmethod
    def inputs(features: torch.Tensor, poses: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, P, D) per pose: the features (B, C, h, w) sampled at its joints, each joint's
        score and position relative to its box, its centre score and box size."""
        b, _, h, w = features.shape
        kps, boxes = poses["keypoints"], poses["boxes"]  # fractions
        grid = torch.stack([kps[..., 1] * 2 - 1, kps[..., 0] * 2 - 1], -1)  # (B, P, K, 2)
        sampled = F.grid_sample(features.float(), grid, align_corners=False)  # (B, C, P, K)
        size = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1 / max(h, w))  # (B, P, 2)
        middle = (boxes[..., 2:] + boxes[..., :2]) / 2
        rel = (kps[..., :2] - middle[:, :, None]) / size[:, :, None]
        return torch.cat([sampled.permute(0, 2, 3, 1).flatten(2), kps[..., 2], rel.flatten(2),
                          poses["centre_scores"][..., None], size], -1)

    def forward(self, features: torch.Tensor, poses: dict[str, torch.Tensor]
                ) -> dict[str, torch.Tensor]:
        """`poses` with refined keypoints and, with a PSM, `psm` (B, P) (predicted OKS)."""
        x = self.inputs(features, poses)
        out = dict(poses)
        if self.refine is not None:
            h, w = features.shape[-2:]
            delta = self.refine(x).unflatten(-1, (self.joints, 2))  # cells
            kps = poses["keypoints"]
            out["keypoints"] = torch.stack([kps[..., 0] + delta[..., 0] / h,
                                            kps[..., 1] + delta[..., 1] / w, kps[..., 2]], -1)
        if self.psm is not None:
            out["psm"] = self.psm(x)[..., 0].sigmoid()
        return out


class MoveNetMultiPose(MoveNet):
    """MoveNet MultiPose on (B, 3, S, S) whole images in 0-255 RGB; output the dense maps
    (B, 90, S/4, S/4): centre (sigmoid), joint regressions, joint heatmaps (sigmoid), joint
    offsets, box size, box offset."""

    head_channels = MULTIPOSE_HEADS
    input_scale = INPUT_SCALE
    whole_image = True
    crop_padding = 1.0  # the whole image, letterboxed, nothing around it
    upscale = False  # an image smaller than the input is padded, not enlarged (measured)
    cpu_batch = None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        learned = config.feature_align or config.quality_score
        self.pose_heads = (PoseHeads(config.num_joints, config.feature_align,
                                     config.quality_score) if learned else None)

    def tail(self, feats: list[torch.Tensor], lam: torch.Tensor | None) -> torch.Tensor:
        """The head maps (B, 90, h, w); with learned pose heads, the FPN features after them."""
        x = self.features(feats, lam)
        maps = {k: head(x) for k, head in self.heads.items()}
        maps["center"] = maps["center"].sigmoid()
        maps["kpt_heatmap"] = maps["kpt_heatmap"].sigmoid()
        parts = [maps[name] for name in MULTIPOSE_HEADS]
        return torch.cat(parts + ([x] if self.pose_heads is not None else []), 1)

    def people(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded people of outputs (B, 90 [+ C], h, w): `decode_multipose`, then the learned
        pose heads when the network has them (`psm`: their predicted OKS)."""
        poses = decode_multipose(out[:, :MAPS], self.config.max_people)
        if self.pose_heads is not None:
            poses = self.pose_heads(out[:, MAPS:], poses)
        return poses

    def flip_merge(self, out: torch.Tensor, flipped: torch.Tensor,
                   flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
        """Average with the mirrored image's maps: mirrored in x, left and right joints
        swapped, and x displacements mirrored (a position x cells from the left edge is w - x
        from it in the mirror, so a displacement dx from a cell becomes 1 - dx)."""
        k = self.config.num_joints
        perm = flip_permutation(k, flip_pairs)
        m = flipped.flip(-1)
        c = CHANNELS
        parts = []
        if out.shape[2] > MAPS:  # FPN features: the unflipped image's, as they are
            out, features = out[:, :, :MAPS], out[:, :, MAPS:]
            return torch.cat([self.flip_merge(out, flipped[:, :, :MAPS], flip_pairs), features],
                             2)
        for name in MULTIPOSE_HEADS:
            x = m[:, :, c[name]]
            if name in ("kpt_regress", "kpt_offset"):
                x = x.unflatten(2, (k, 2))[:, :, perm]
                x = torch.stack([x[:, :, :, 0], 1 - x[:, :, :, 1]], 3).flatten(2, 3)
            elif name == "kpt_heatmap":
                x = x[:, :, perm]
            elif name == "box_offset":
                x = torch.stack([x[:, :, 0], 1 - x[:, :, 1]], 2)
            parts.append(x)
        return (out + torch.cat(parts, 2)) / 2

    @torch.no_grad()
    def decode_candidates(self, out: torch.Tensor, centers: np.ndarray, scales: np.ndarray,
                          dark: bool = False) -> Candidates:
        """Every person of each image (up to `max_people`, centre score above
        `score_thresh`), in image pixels, scored by `config.pose_score`, with its box area;
        empty slots have score 0."""
        poses = self.people(out[:, 0].float())
        kps, boxes, psm = poses["keypoints"], poses["boxes"], poses.get("psm")
        rule = self.config.pose_score
        if rule == "auto":
            rule = "own" if psm is None else "psm"
        if rule.startswith("psm") and psm is None:
            raise ValueError(f"pose score {rule}: this checkpoint has no PSM")
        centre = poses["centre_scores"]
        scores = {"own": lambda: poses["scores"], "centre": lambda: centre,
                  "psm": lambda: centre * psm, "psm_only": lambda: psm}[rule]()
        scores = torch.where(centre > self.config.score_thresh, scores, 0.0)
        b, p, k, _ = kps.shape
        h, w = self.config.image_size
        xy = torch.stack([kps[..., 1] * w - 0.5, kps[..., 0] * h - 0.5], -1)
        image_xy = heatmap_to_image(xy, np.repeat(centers[:, None], p, 1),
                                    np.repeat(scales[:, None], p, 1), (w, h))
        corners = torch.stack([boxes[..., 1] * w, boxes[..., 0] * h, boxes[..., 3] * w,
                               boxes[..., 2] * h], -1).view(b, p, 2, 2)
        image_box = heatmap_to_image(corners, np.repeat(centers[:, None], p, 1),
                                     np.repeat(scales[:, None], p, 1), (w, h))
        span = (image_box[:, :, 1] - image_box[:, :, 0]).clamp(min=0)
        keypoints = torch.cat([image_xy, kps[..., 2:]], -1).cpu().numpy()
        scores, areas = scores.cpu().numpy(), (PSEUDO_AREA * span[..., 0] * span[..., 1]).cpu()
        if self.config.soft_nms:
            scores = _soft_nms(image_box.flatten(2).cpu().numpy(), scores,
                               self.config.score_thresh)
        xywh = torch.cat([image_box[:, :, 0], span], -1).cpu().numpy()
        return Candidates(keypoints, scores, areas.numpy(), np.zeros(p, np.int64),
                          None if psm is None else psm.cpu().numpy(), xywh)

    def decode(self, out: torch.Tensor, centers: np.ndarray, scales: np.ndarray,
               dark: bool = False) -> np.ndarray:
        return self.decode_candidates(out, centers, scales, dark).keypoints


def _soft_nms(boxes: np.ndarray, scores: np.ndarray, min_score: float) -> np.ndarray:
    """Scores (B, P) after Gaussian soft-NMS of each image's boxes (B, P, 4); 0 for the
    dropped."""
    out = np.zeros_like(scores)
    for i in range(len(scores)):
        alive = np.flatnonzero(scores[i] > 0)
        keep, new = soft_nms(boxes[i, alive], scores[i, alive], min_score)
        out[i, alive[keep]] = new
    return out


def decode_multipose(maps: torch.Tensor, max_people: int) -> dict[str, torch.Tensor]:
    """The people in dense maps (B, 90, h, w), as the published graph decodes them: keypoints
    (B, P, K, 3) = (y, x, score) with y, x fractions of the input's height and width, boxes
    (B, P, 4) = (ymin, xmin, ymax, xmax) fractions, person scores (B, P) and centre scores
    (B, P), P = min(max_people, h·w), best centre first."""
    c = CHANNELS
    b, _, h, w = maps.shape
    centre = maps[:, c["center"]]  # (B, 1, h, w)
    pooled = F.max_pool2d(centre, CENTRE_POOL, 1, CENTRE_POOL // 2)
    peaks = centre * ((centre - pooled).abs() < PEAK_TOLERANCE)
    p = min(max_people, h * w)
    centre_scores, index = peaks.flatten(1).topk(p, dim=1)  # (B, P)
    cy, cx = torch.div(index, w, rounding_mode="floor"), index % w
    rows = torch.arange(b, device=maps.device).view(b, 1)

    def at_centres(name: str) -> torch.Tensor:  # (B, P, C) values of a head at the centres
        return maps[:, c[name]].permute(0, 2, 3, 1)[rows, cy, cx]

    size = at_centres("box_scale").clamp(min=0)
    offset = at_centres("box_offset")
    by, bx = cy.float() + offset[..., 0], cx.float() + offset[..., 1]
    ymin = (by - size[..., 0] / 2).clamp(0, h)
    xmin = (bx - size[..., 1] / 2).clamp(0, w)
    ymax = (by + size[..., 0] / 2).clamp(0, h)
    xmax = (bx + size[..., 1] / 2).clamp(0, w)
    regress = at_centres("kpt_regress")
    k = regress.shape[-1] // 2
    ry = cy.float()[..., None] + regress[..., 0::2]  # (B, P, K), cells
    rx = cx.float()[..., None] + regress[..., 1::2]
    ys = torch.arange(h, device=maps.device, dtype=torch.float32).view(1, 1, 1, h, 1)
    xs = torch.arange(w, device=maps.device, dtype=torch.float32).view(1, 1, 1, 1, w)
    d2 = (ys - ry[..., None, None]) ** 2 + (xs - rx[..., None, None]) ** 2  # (B, P, K, h, w)
    inside = ((ys >= ymin.view(b, p, 1, 1, 1)) & (ys < ymax.view(b, p, 1, 1, 1))
              & (xs >= xmin.view(b, p, 1, 1, 1)) & (xs < xmax.view(b, p, 1, 1, 1)))
    heat = maps[:, c["kpt_heatmap"]].unsqueeze(1)  # (B, 1, K, h, w)
    weighted = heat * torch.exp(-d2 / (DISTANCE_SCALE * min(h, w))) * inside
    best = weighted.flatten(3).argmax(3)  # (B, P, K)
    jy, jx = torch.div(best, w, rounding_mode="floor"), best % w
    joints = torch.arange(k, device=maps.device).view(1, 1, k)
    offsets = maps[:, c["kpt_offset"]].view(b, k, 2, h, w)
    r = rows.view(b, 1, 1)
    oy, ox = offsets[r, joints, 0, jy, jx], offsets[r, joints, 1, jy, jx]
    score = weighted.amax(1).flatten(2)  # (B, K, h·w): the best over the people, per cell
    joint_scores = score.gather(2, best.permute(0, 2, 1)).permute(0, 2, 1)  # (B, P, K)
    y = (jy.float() + oy) / h
    x = (jx.float() + ox) / w
    confident = joint_scores > JOINT_THRESH
    mean = (joint_scores * confident).sum(-1) / confident.sum(-1).clamp(min=1)
    boxes = torch.stack([ymin / h, xmin / w, ymax / h, xmax / w], -1).clamp(0, 1)
    return {"keypoints": torch.stack([y, x, joint_scores], -1), "boxes": boxes,
            "scores": centre_scores * mean, "centre_scores": centre_scores}
