"""Single-stage multi-person pose regression with pose filtering and scoring (Miao, Lin and Cao,
"Multi-Person Pose Regression via Pose Filtering and Scoring").

The network sees the whole image (letterboxed to its square input) and predicts, at every
location of a five-level feature pyramid (P3-P7, strides 8-128), whether the location is a
person's centre (classification), the offsets of that person's K keypoints from it
(regression) and the OKS of its own pose (the pose scoring module, PSM). With feature alignment
the first-stage pose is refined from features sampled at its keypoints by a deformable
convolution whose K sampling points are the first-stage keypoints (`_align`). A heatmap branch
on P3 only serves training. Here the backbone and the P3-P5 neck are YOLOX-Nano's (CSPDarknet +
PAFPN, initialised from the converted COCO detector); P6 and P7 are new stride-2 convolutions
on P5.

Outputs are dense: `forward_multi` gives (B, 1, A, 2K + 2) over the A locations of all levels
(keypoints in input pixels, classification logit, quality logit); `decode_candidates` keeps the
best-scoring poses after soft-NMS. The engine meets it as any other pose network: the "crop" is
the whole image (`whole_image`), the flip test averages the dense maps, and the decoded
candidates carry the network's own scores (classification × PSM) and areas.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .decode import flip_permutation, heatmap_to_image
from .pose import Candidates, PoseNet
from .yolox import PAFPN

STRIDES = (8, 16, 32, 64, 128)
# Pseudo-box size ranges (longer side, input pixels) assigned to P3..P7 (FCOS's): a person is
# 4-8 strides across on its level.
LEVEL_RANGES = ((0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf))
PSEUDO_AREA = 0.53  # COCO segmentation area ≈ 0.53 × box area; the OKS scale of a pseudo box
_NANO = {"width": 0.25, "depth": 0.33, "depthwise": True}


@dataclass
class DenseOutputs:
    """What training needs from one forward pass; A locations over all levels."""

    stage1: torch.Tensor  # (B, A, K, 2) first-stage keypoints, input pixels
    keypoints: torch.Tensor  # (B, A, K, 2) final keypoints (refined with feature alignment)
    cls: torch.Tensor  # (B, A) classification logits
    quality: torch.Tensor  # (B, A) PSM (or centerness) logits
    heatmap: torch.Tensor | None  # (B, K, H/8, W/8) logits of the P3 heatmap branch
    locations: torch.Tensor  # (A, 2) x, y of each location in input pixels
    strides: torch.Tensor  # (A,) stride of each location's level
    levels: list[tuple[int, int]]  # (h, w) of each level


def _tower(width: int, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.ReLU()]
    return nn.Sequential(*layers)


def level_of(size: float, levels: int = len(STRIDES)) -> int:
    """The pyramid level (0 = P3) a person whose pseudo box's longer side is `size` learns on."""
    level = next(i for i, (lo, hi) in enumerate(LEVEL_RANGES) if lo <= size < hi)
    return min(level, levels - 1)


def level_locations(sizes: Sequence[tuple[int, int]], device=None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (A, 2) input-pixel positions (x, y) of the locations of levels of `sizes` (h, w),
    level after level, row-major; and each one's stride (A,)."""
    points, strides = [], []
    for (h, w), s in zip(sizes, STRIDES, strict=False):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                indexing="ij")
        points.append(torch.stack([xs, ys], -1).reshape(-1, 2).float() * s + (s - 1) / 2)
        strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(strides)


@functools.lru_cache(maxsize=8)
def mirror_index(sizes: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """For every location, the index of its horizontal mirror image on the same level (one
    tensor per input size, made once)."""
    index, start = [], 0
    for h, w in sizes:
        grid = torch.arange(h * w).view(h, w).flip(1).reshape(-1)
        index.append(grid + start)
        start += h * w
    return torch.cat(index)


class PfsPoseNet(PoseNet):
    """YOLOX-Nano backbone + PAFPN, P6/P7, shared heads, optional feature alignment."""

    input_mean = (0.0, 0.0, 0.0)
    input_std = (1 / 255, 1 / 255, 1 / 255)  # 0-255 pixels, as YOLOX (BGR inside)
    outputs_heatmaps = False
    whole_image = True
    crop_padding = 1.0  # the whole image, letterboxed, nothing around it
    square_input = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        k, c = config.num_joints, config.head_width
        self.neck = PAFPN(**_NANO)  # named `backbone.*` in the detector: see `yolox_init`
        ins = [int(v * _NANO["width"]) for v in (256, 512, 1024)]
        self.lateral = nn.ModuleList([nn.Conv2d(ch, c, 1) for ch in ins])
        self.p6 = nn.Conv2d(ins[-1], c, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.cls_tower = _tower(c)
        self.reg_tower = _tower(c)
        self.cls_pred = nn.Conv2d(c, 1, 3, padding=1)
        self.reg_pred = nn.Conv2d(c, 2 * k, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(STRIDES)))
        self.points = k + 1 - k % 2  # deformable kernel width: the K keypoints (+ the centre)
        if config.feature_align:
            self.align_weight = nn.Parameter(torch.empty(c, c, 1, self.points))
            nn.init.kaiming_uniform_(self.align_weight, a=1)
            self.align_bias = nn.Parameter(torch.zeros(c))
            self.refine_pred = nn.Conv2d(c, 2 * k, 1)
            self.quality_pred = nn.Conv2d(c, 1, 1)
            nn.init.zeros_(self.refine_pred.weight)
            nn.init.zeros_(self.refine_pred.bias)
        else:
            self.quality_pred = nn.Conv2d(c, 1, 3, padding=1)
        self.heatmap_head = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(c, k, 1))
        prior = -math.log((1 - 0.01) / 0.01)
        for conv in (self.cls_pred, self.heatmap_head[-1]):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, prior)
        nn.init.normal_(self.reg_pred.weight, std=0.01)
        nn.init.zeros_(self.reg_pred.bias)
        self.use_quality = config.quality_score  # test score: cls × quality, else cls alone

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The P3..P7 features (B, head_width, H/s, W/s) of RGB 0-255 images."""
        p3, p4, p5 = self.neck(x.flip(1))  # YOLOX was trained on BGR
        p6 = self.p6(p5)
        p7 = self.p7(F.relu(p6))
        return [lat(p) for lat, p in zip(self.lateral, (p3, p4, p5), strict=True)] + [p6, p7]

    def dense(self, feats: list[torch.Tensor], heatmap: bool = False) -> DenseOutputs:
        """Every location's first-stage and final pose, classification and quality logits."""
        k = self.config.num_joints
        stage1, final, cls, quality = [], [], [], []
        sizes = [tuple(f.shape[-2:]) for f in feats]
        for level, (f, s) in enumerate(zip(feats, STRIDES, strict=False)):
            b, _, h, w = f.shape
            cls_feat, reg_feat = self.cls_tower(f), self.reg_tower(f)
            offsets = self.reg_pred(reg_feat) * (self.scales[level] * s)  # (B, 2K, h, w) px
            cls.append(self.cls_pred(cls_feat).flatten(1))
            one = offsets.view(b, k, 2, h, w)
            stage1.append(one)
            if self.config.feature_align:
                aligned = F.relu(self._align(reg_feat, one.detach(), s))
                delta = self.refine_pred(aligned) * s
                final.append(one + delta.view(b, k, 2, h, w))
                quality.append(self.quality_pred(aligned).flatten(1))
            else:
                quality.append(self.quality_pred(reg_feat).flatten(1))
        locations, strides = level_locations(sizes, feats[0].device)

        def absolute(parts: list[torch.Tensor]) -> torch.Tensor:
            flat = torch.cat([p.flatten(3) for p in parts], 3)  # (B, K, 2, A)
            return flat.permute(0, 3, 1, 2) + locations[None, :, None, :]

        hm = self.heatmap_head(feats[0]) if heatmap else None
        first = absolute(stage1)
        return DenseOutputs(first, absolute(final) if self.config.feature_align else first,
                            torch.cat(cls, 1),
                            torch.cat(quality, 1), hm, locations, strides, sizes)

    def _align(self, feat: torch.Tensor, offsets: torch.Tensor, stride: int) -> torch.Tensor:
        """Feature alignment: a deformable convolution (kernel 1 × points) whose sampling point
        j sits on keypoint j of each location's first-stage pose (the extra point, for an even
        K, on the location). Computed as bilinear sampling + one linear map, which equals
        `torchvision.ops.deform_conv2d` with those offsets (tested) and is several times faster
        on a CPU. `offsets` (B, K, 2, h, w) in input pixels from each location."""
        b, _, h, w = feat.shape
        ys = torch.arange(h, device=feat.device, dtype=feat.dtype).view(1, 1, h, 1)
        xs = torch.arange(w, device=feat.device, dtype=feat.dtype).view(1, 1, 1, w)
        cells = torch.stack([xs + offsets[:, :, 0] / stride, ys + offsets[:, :, 1] / stride], -1)
        centre = torch.stack([xs.expand(b, 1, h, w), ys.expand(b, 1, h, w)], -1)
        points = cells.permute(0, 2, 3, 1, 4).reshape(b, h * w, -1, 2)
        out = self._aligned_at(feat, points, centre.reshape(b, h * w, 1, 2))
        return out.view(b, -1, h, w)

    def _aligned_at(self, feat: torch.Tensor, points: torch.Tensor, centre: torch.Tensor
                    ) -> torch.Tensor:
        """The aligned features (B, C, P) of P poses whose K keypoints are `points` (B, P, K, 2)
        and whose locations are `centre` (B, P, 1, 2), in feature cells (x, y) of `feat`."""
        h, w = feat.shape[-2:]
        if self.points > points.shape[2]:
            points = torch.cat([points, centre], 2)
        scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], dtype=feat.dtype,
                             device=feat.device)
        sampled = F.grid_sample(feat, points * scale - 1, align_corners=True,
                                padding_mode="zeros")  # (B, C, P, points)
        out = torch.einsum("bcap,ocp->boa", sampled, self.align_weight[:, :, 0])
        return out + self.align_bias.view(1, -1, 1)

    @torch.no_grad()
    def score_poses(self, feats: list[torch.Tensor], xy: torch.Tensor) -> np.ndarray:
        """The PSM's predicted OKS (P,) of poses xy (P, K, 2) in input pixels, each read at
        the location nearest its pseudo box centre on the level its size is assigned to, from
        features aligned to its own keypoints (`feats` of one image)."""
        scores = np.zeros(len(xy), np.float32)
        lo, hi = xy.amin(1), xy.amax(1)
        levels = [level_of(float(v), len(feats)) for v in (hi - lo).amax(1)]
        for level in sorted(set(levels)):
            rows = [p for p, v in enumerate(levels) if v == level]
            s = STRIDES[level]
            reg_feat = self.reg_tower(feats[level])
            h, w = reg_feat.shape[-2:]
            cells = (xy[rows] - (s - 1) / 2) / s  # (P, K, 2)
            centre = (((lo[rows] + hi[rows]) / 2 - (s - 1) / 2) / s).round()
            centre = torch.stack([centre[:, 0].clamp(0, w - 1), centre[:, 1].clamp(0, h - 1)], 1)
            aligned = F.relu(self._aligned_at(reg_feat, cells[None], centre[None, :, None]))
            logits = self.quality_pred(aligned[..., None])  # (1, 1, P, 1): the 1×1 head
            scores[rows] = logits.flatten().sigmoid().cpu().numpy()
        return scores

    def tail(self, feats: list[torch.Tensor], lam: torch.Tensor | None) -> torch.Tensor:
        """(B, A, 2K + 2): keypoints (x, y per joint, input pixels), cls and quality logits."""
        d = self.dense(feats)
        return torch.cat([d.keypoints.flatten(2), d.cls[..., None], d.quality[..., None]], -1)

    def train_outputs(self, x: torch.Tensor, lams: torch.Tensor | None = None) -> DenseOutputs:
        return self.dense(self.trunk(x), heatmap=True)

    def flip_merge(self, out: torch.Tensor, flipped: torch.Tensor,
                   flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
        """Average with the mirrored image's dense maps: each location with its mirror image,
        x mirrored, left and right joints swapped."""
        k = self.config.num_joints
        side = self.config.image_size[1]
        sizes = tuple((math.ceil(self.config.image_size[0] / s), math.ceil(side / s))
                      for s in STRIDES)
        mirrored = flipped[:, :, mirror_index(sizes).to(out.device)]
        kps = mirrored[..., :2 * k].unflatten(-1, (k, 2))[..., flip_permutation(k, flip_pairs), :]
        kps = torch.stack([side - 1 - kps[..., 0], kps[..., 1]], -1)
        mirrored = torch.cat([kps.flatten(-2), mirrored[..., 2 * k:]], -1)
        return (out + mirrored) / 2

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        """Dense pose scores: sigmoid(cls) × sigmoid(quality) (or the first alone)."""
        k = self.config.num_joints
        score = out[..., 2 * k].sigmoid()
        return score * out[..., 2 * k + 1].sigmoid() if self.use_quality else score

    def decode_candidates(self, out: torch.Tensor, centers: np.ndarray, scales: np.ndarray,
                          dark: bool = False) -> Candidates:
        """The best poses of each image after soft-NMS on their pseudo boxes, in image pixels;
        every joint's confidence is the pose score; empty slots have score 0. With a quality
        branch, `psm` holds its predicted OKS of each pose (centerness, for a network trained
        with quality "centerness")."""
        from ..core.oks import soft_nms

        k, top = self.config.num_joints, self.config.max_people
        out = out[:, 0].float()
        b = out.shape[0]
        kps = np.zeros((b, top, k, 3), np.float32)
        scores = np.zeros((b, top), np.float32)
        areas = np.zeros((b, top), np.float32)
        psm = np.zeros((b, top), np.float32)
        h, w = self.config.image_size
        for i in range(b):
            score = self.scores(out[i])
            order = torch.argsort(score, descending=True)[:4 * top]
            order = order[score[order] > self.config.score_thresh]
            xy = out[i, order, :2 * k].view(-1, k, 2)
            if len(order) == 0:
                continue
            boxes = torch.cat([xy.amin(1), xy.amax(1)], -1).cpu().numpy()
            keep, new = soft_nms(boxes, score[order].cpu().numpy(), self.config.score_thresh)
            keep, new = keep[:top], new[:top]
            n = len(keep)
            image_xy = heatmap_to_image(xy[keep], np.repeat(centers[i:i + 1], n, 0),
                                        np.repeat(scales[i:i + 1], n, 0), (w, h)).cpu().numpy()
            kps[i, :n, :, :2] = image_xy
            kps[i, :n, :, 2] = new[:, None]
            scores[i, :n] = new
            span = image_xy.max(1) - image_xy.min(1)
            areas[i, :n] = PSEUDO_AREA * span[:, 0] * span[:, 1]
            psm[i, :n] = out[i, order[keep], 2 * k + 1].sigmoid().cpu().numpy()
        return Candidates(kps, scores, areas, np.zeros(top, np.int64),
                          psm if self.use_quality else None)

    def decode(self, out: torch.Tensor, centers: np.ndarray, scales: np.ndarray,
               dark: bool = False) -> np.ndarray:
        return self.decode_candidates(out, centers, scales, dark).keypoints


def yolox_init(model: PfsPoseNet, state: dict[str, torch.Tensor]) -> int:
    """Copy a YOLOX detector's backbone + PAFPN weights (`backbone.*`) into `model.neck`;
    returns how many tensors were copied."""
    neck = {k[len("backbone."):]: v.float() for k, v in state.items()
            if k.startswith("backbone.")}
    model.neck.load_state_dict(neck, strict=True)
    return len(neck)
