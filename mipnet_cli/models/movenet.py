"""MoveNet SinglePose (Google, 2021) as a top-down pose network, with optional MIMBs.

MobileNetV2 (width 1.0 for Lightning, 1.75 for Thunder) + a 4-level FPN down to stride 4 +
CenterNet-style heads (person centre, keypoint regression from the centre, keypoint heatmaps,
keypoint offsets), followed by MoveNet's own decoding: the centre closest to the crop's middle,
then for each joint the heatmap peak weighted by closeness to the regressed joint. Layers use
TensorFlow's "SAME" padding (asymmetric for stride 2), so the converted weights give the
published outputs.

As a `PoseNet`, the λ-independent trunk is the MobileNetV2 backbone; the tail is the FPN and
the heads. With `num_instances > 1`, MIMBs sit on the four lateral (1×1) outputs that enter the
FPN and on the FPN output that the heads read — the places of HRNet's stage-4 branch inputs and
stage-4 output.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .mimb import MIMB, MIMBGroup
from .pose import KeypointPoseNet

# MobileNetV2 inverted residual settings: expansion t, channels c, repeats n, stride s.
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))
# Block indices (Keras numbering) whose outputs feed the FPN: strides 4, 8, 16.
_TAPS = (2, 5, 9)
# The deep MIMB (se_modules[2]) sits on this block's output (stride 16, 96 channels; the block
# has no residual path, so a neutral start is exact): the last six blocks then depend on λ.
_DEEP = 10
FPN_CHANNELS = (32, 24, 24)  # after merging at strides 16, 8, 4
_LATERAL_CHANNELS = (64, 64, 32, 24)  # strides 32, 16, 8, 4
HEAD_CHANNELS = {"center": 1, "kpt_regress": 34, "kpt_heatmap": 17, "kpt_offset": 34}
# The published graphs store their decoding constants in float16; rounding ours the same way
# reproduces their outputs exactly (1/48 in float16 is 1.2e-4 off, 1/64 is exact).
CENTER_BIAS = float(np.float16(1.8))  # added to the distances in the centre and joint weighting


def _divisible(v: float, divisor: int = 8) -> int:
    """Keras' channel rounding for width multipliers."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding (extra row/column at the bottom/right).

    Stride 1 with an odd kernel pads symmetrically, inside the convolution; only strided
    layers need the asymmetric pad."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.stride == (1, 1) and all(k % 2 for k in self.kernel_size):
            self.padding = tuple(k // 2 for k in self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                              reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


def _conv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
          bias: bool = True) -> SameConv:
    return SameConv(cin, cout, k, stride, groups=groups, bias=bias)


class InvertedResidual(nn.Module):
    """Expand 1×1 (ReLU6) -> depthwise 3×3 (ReLU6) -> project 1×1, batch norm folded in."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = _conv(cin, hidden) if expansion != 1 else None
        self.depthwise = _conv(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv(hidden, cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand(x), inplace=True) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(y), inplace=True))
        return x + y if self.residual else y


class SeparableConv(nn.Module):
    """Depthwise 3×3 (no bias) + pointwise 1×1 with bias, then ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = _conv(cin, cin, 3, groups=cin, bias=False)
        self.pointwise = _conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pointwise(self.depthwise(x)), inplace=True)


class Head(nn.Module):
    def __init__(self, cin: int, cout: int, hidden: int = 96) -> None:
        super().__init__()
        self.separable = SeparableConv(cin, hidden)
        self.out = _conv(hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.separable(x))


class MoveNet(KeypointPoseNet):
    """MoveNet SinglePose on (B, 3, S, S) RGB crops in 0-255; output (B, K, 3) = (x, y,
    confidence) with x, y in input pixels (0 at the first pixel's centre)."""

    # Its high-resolution activations outgrow the CPU caches in large batches: 12 Thunder
    # crops take 400 ms in batches of 2-4 and 595 ms in one batch (2 threads, measured).
    cpu_batch = 4
    square_input = True
    head_channels = HEAD_CHANNELS
    input_scale = 1 / 127.5  # 0-255 RGB -> [-1, 1]: x · input_scale - 1

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        h, w = config.image_size
        if h != w:
            raise ValueError(f"MoveNet takes square crops, got {h}x{w}")
        if config.num_joints != 17:
            raise ValueError("MoveNet predicts the 17 COCO keypoints")
        alpha = config.width_mult
        stem = _divisible(32 * alpha)
        self.stem = _conv(3, stem, 3, 2)
        blocks, cin = [], stem
        for t, c, n, s in _MOBILENET_V2:
            cout = _divisible(c * alpha)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.last = _conv(cin, 1280)
        tap_channels = [self.blocks[i].project.out_channels for i in _TAPS]
        self.laterals = nn.ModuleList(
            _conv(c, out) for c, out in zip([1280, *reversed(tap_channels)], _LATERAL_CHANNELS,
                                            strict=True))
        self.fpn = nn.ModuleList(
            SeparableConv(cin, cout) for cin, cout in zip(_LATERAL_CHANNELS[1:], FPN_CHANNELS,
                                                           strict=True))
        self.heads = nn.ModuleDict({k: Head(FPN_CHANNELS[-1], c)
                                    for k, c in self.head_channels.items()})
        se = config.active_se
        self.lateral_mimbs = (MIMBGroup(list(_LATERAL_CHANNELS), config.lambda_dim,
                                        config.se_reduction) if se[0] else None)
        self.output_mimb = (MIMB(FPN_CHANNELS[-1], config.lambda_dim, config.se_reduction)
                            if se[1] else None)
        self.deep_mimb = (MIMB(self.blocks[_DEEP].project.out_channels, config.lambda_dim,
                               config.se_reduction) if se[2] else None)
        self.heatmap_size = (h // 4, w // 4)

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The λ-independent MobileNetV2 features: strides 32 (with a deep MIMB: block _DEEP's
        stride-16 output instead), 16, 8, 4."""
        x = x * self.input_scale - 1.0  # MoveNet's own normalisation of 0-255 RGB
        x = F.relu6(self.stem(x))
        taps = {}
        stop = _DEEP if self.deep_mimb is not None else len(self.blocks) - 1
        for i, block in enumerate(self.blocks[:stop + 1]):
            x = block(x)
            if i in _TAPS:
                taps[i] = x
        top = x if self.deep_mimb is not None else F.relu6(self.last(x))
        return [top, *(taps[i] for i in reversed(_TAPS))]

    def features(self, feats: list[torch.Tensor], lam: torch.Tensor | None) -> torch.Tensor:
        """The stride-4 FPN output that the heads read."""
        if self.deep_mimb is not None:  # the last blocks, on λ-modulated features
            x = self.deep_mimb(feats[0], lam)
            for block in self.blocks[_DEEP + 1:]:
                x = block(x)
            feats = [F.relu6(self.last(x)), *feats[1:]]
        lateral = [conv(f) for conv, f in zip(self.laterals, feats, strict=True)]
        if self.lateral_mimbs is not None:
            lateral = self.lateral_mimbs(lateral, lam)
        x = lateral[0]
        for fpn, skip in zip(self.fpn, lateral[1:], strict=True):
            up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = fpn(up + skip)
        return self.output_mimb(x, lam) if self.output_mimb is not None else x

    def head_maps(self, feats: list[torch.Tensor], lam: torch.Tensor | None
                  ) -> dict[str, torch.Tensor]:
        """The head outputs (B, C, S/4, S/4); centre and heatmaps after the sigmoid."""
        x = self.features(feats, lam)
        maps = {k: head(x) for k, head in self.heads.items()}
        maps["center"] = maps["center"].sigmoid()
        maps["kpt_heatmap"] = maps["kpt_heatmap"].sigmoid()
        return maps

    def tail(self, feats: list[torch.Tensor], lam: torch.Tensor | None) -> torch.Tensor:
        return decode_movenet(self.head_maps(feats, lam), self.config.image_size[0])

    @torch.no_grad()
    def neutral_mimbs(self) -> None:
        """Fresh MIMBs gate every channel by the same constant g = 0.25 (excitation and λ
        embedding output weights zero: 0.5 each, where the sigmoids are steepest, so λ's
        gradient is not damped), and the convolution feeding each MIMB is scaled by 1/g
        (exact: a 1×1 convolution, or one followed by ReLU), so the network starts as the
        pretrained single-instance one and both instances start equal."""
        pairs = []
        if self.lateral_mimbs is not None:
            pairs += list(zip(self.lateral_mimbs.se_layers, self.laterals, strict=True))
        if self.output_mimb is not None:
            pairs.append((self.output_mimb, self.fpn[-1].pointwise))
        if self.deep_mimb is not None:
            pairs.append((self.deep_mimb, self.blocks[_DEEP].project))
        for mimb, conv in pairs:
            mimb.fc[2].weight.zero_()
            last = mimb.fc_lambda[3]
            last.weight.zero_()
            last.bias.zero_()
            gate = 0.25
            conv.weight.div_(gate)
            conv.bias.div_(gate)

    def train_outputs(self, x: torch.Tensor, lams: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head maps of every crop and λ, (B·L, C, S/4, S/4), instance-major per crop."""
        b, n = x.shape[0], lams.shape[0]
        feats = self.trunk(x)
        lam = None
        if any(m is not None for m in (self.lateral_mimbs, self.output_mimb, self.deep_mimb)):
            feats = [f.repeat_interleave(n, dim=0) for f in feats]
            lam = lams.to(x.dtype).repeat(b, 1)
        maps = self.head_maps(feats, lam)
        if lam is None and n > 1:  # no MIMB: every λ sees the same maps
            maps = {k: v.repeat_interleave(n, dim=0) for k, v in maps.items()}
        return maps

    def train_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor,
                   weights: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        """CenterNet-style losses on MoveNet's heads, keeping MoveNet's division of labour:
        the centre heatmap and the regressions from it belong to the person λ selects (the
        instance's target), the joint heatmaps and offsets to every person in the crop (the
        decoding picks the joints near the regressed ones). Focal loss on the two heatmaps,
        L1 on regressions and offsets (labelled joints only), averaged over crops and λ.

        With `meta["teacher"]` (the head maps of a frozen single-instance MoveNet on the same
        crops), the distillation recipe of `_teacher_loss` instead."""
        if "teacher" in meta:
            return self._teacher_loss(outputs, meta)
        joints, visible = meta["joints"], meta["joints_vis"]
        b, n, k = visible.shape
        h = outputs["center"].shape[-1]
        cell = self.config.image_size[0] / h
        j = (joints.reshape(b * n, k, 2).float() + 0.5) / cell  # the instance's joints, cells
        v = (visible.reshape(b * n, k) > 0).float()
        centre = (j * v[..., None]).sum(1) / v.sum(1).clamp(min=1)[:, None]
        centre_cell = centre.floor().clamp(0, h - 1)
        ys, xs = _grid(h, h, j.device)
        sigma = 1.0 + 0.04 * h
        d2 = (ys - centre_cell[:, 1, None, None]) ** 2 + (xs - centre_cell[:, 0, None, None]) ** 2
        centre_target = torch.exp(-d2 / (2 * sigma**2))[:, None] * (v.sum(1) > 0).float().view(
            -1, 1, 1, 1)
        # Everyone in the crop: the instances' people and the context, per crop.
        everyone = torch.cat([joints, meta["context_joints"]], 1).float()  # (B, N + M, K, 2)
        seen = torch.cat([visible, meta["context_vis"]], 1) > 0
        all_j = (everyone + 0.5) / cell
        heat = _gaussians(all_j, seen.float(), h, 2.0).amax(1)  # (B, K, h, w)
        heat = heat.repeat_interleave(n, dim=0)
        loss = _focal(outputs["center"].float(), centre_target, torch.ones_like(centre_target))
        loss = loss + _focal(outputs["kpt_heatmap"].float(), heat, torch.ones_like(heat))
        # Regressions and offsets are learnt on the 3×3 cells around each peak: decoding may
        # pick a neighbour of the peak (its distance weighting), and then reads that cell.
        loss = loss + _cell_l1(outputs["kpt_regress"], centre_cell[:, None, None].expand(
            -1, 1, k, -1), j[:, None], v[:, None])
        all_j = all_j.repeat_interleave(n, dim=0)  # (B·N, P, K, 2): every λ sees everyone
        return loss + _cell_l1(outputs["kpt_offset"], all_j.floor().clamp(0, h - 1), all_j,
                               seen.repeat_interleave(n, dim=0).float())


    def _teacher_loss(self, outputs: dict[str, torch.Tensor], meta: dict[str, torch.Tensor]
                      ) -> torch.Tensor:
        """Learn λ from a frozen single-instance teacher. MoveNet's joint heatmaps, offsets and
        dense regressions describe every person of the crop whatever λ is; only the centre
        heatmap says whose pose is decoded. So every instance copies the teacher's maps, except
        the centre of an instance whose target is another person: the teacher's centre map
        kept only around that person's centre (mean of the labelled joints; a Gaussian there
        where the teacher has no peak), the box's own person's centre removed. Binary
        cross-entropy for the sigmoid maps, L1 for offsets (where the joint heatmaps are) and
        regressions (where the centre is), averaged over crops and λ."""
        teacher = meta["teacher"]
        visible = meta["joints_vis"]
        b, n, k = visible.shape
        t = {key: v.float().repeat_interleave(n, dim=0) for key, v in teacher.items()}
        h = t["center"].shape[-1]
        own = meta["fallback"].clone().bool()
        own[:, 0] = True
        own = own.reshape(b * n)
        centre_t = t["center"].clone()
        if not own.all():
            cell = self.config.image_size[0] / h
            j = (meta["joints"].reshape(b * n, k, 2).float() + 0.5) / cell
            v = (visible.reshape(b * n, k) > 0).float()
            centre = (j * v[..., None]).sum(1) / v.sum(1).clamp(min=1)[:, None]
            ys, xs = _grid(h, h, j.device)
            d2 = ((ys - centre[:, 1, None, None]) ** 2 + (xs - centre[:, 0, None, None]) ** 2)
            window = torch.exp(-d2 / (2 * (0.06 * h) ** 2))[:, None]  # about 3 cells
            sigma = 1.0 + 0.04 * h
            target = torch.maximum(t["center"] * window,
                                   0.5 * torch.exp(-d2 / (2 * sigma**2))[:, None])
            centre_t = torch.where(own.view(-1, 1, 1, 1), centre_t, target)
        rows = float(b * n)
        bce = F.binary_cross_entropy
        loss = bce(outputs["center"].float().clamp(1e-4, 1 - 1e-4), centre_t,
                   reduction="sum") / rows
        loss = loss + bce(outputs["kpt_heatmap"].float().clamp(1e-4, 1 - 1e-4),
                          t["kpt_heatmap"], reduction="sum") / rows
        offset_w = t["kpt_heatmap"].repeat_interleave(2, dim=1)
        loss = loss + ((outputs["kpt_offset"].float() - t["kpt_offset"]).abs()
                       * offset_w).sum() / offset_w.sum().clamp(min=1)
        regress_w = centre_t.expand_as(t["kpt_regress"])
        return loss + ((outputs["kpt_regress"].float() - t["kpt_regress"]).abs()
                       * regress_w).sum() / regress_w.sum().clamp(min=1)


def _gaussians(joints: torch.Tensor, seen: torch.Tensor, size: int, sigma: float
               ) -> torch.Tensor:
    """(B, P, K, size, size) Gaussian peaks (value 1 at the joint's cell) of labelled joints."""
    ys, xs = _grid(size, size, joints.device)
    cells = joints.floor()
    d2 = ((ys - cells[..., 1, None, None]) ** 2 + (xs - cells[..., 0, None, None]) ** 2)
    return torch.exp(-d2 / (2 * sigma**2)) * seen[..., None, None]


def _cell_l1(maps: torch.Tensor, cells: torch.Tensor, joints: torch.Tensor, v: torch.Tensor
             ) -> torch.Tensor:
    """L1 between the (dy, dx) that `maps` (R, 2K, h, w) hold for joint j at the 3×3 cells
    around `cells[:, p, j]` (R, P, K, 2; x, y) and joint j of person p relative to those
    cells, labelled joints (`v`, (R, P, K)) only: the centre's cells for the regressions,
    each joint's own for the offsets."""
    r, p, k = v.shape
    h, w = maps.shape[-2:]
    rows = torch.arange(r, device=maps.device).view(r, 1, 1)
    ids = torch.arange(k, device=maps.device).view(1, 1, k)
    flat = maps.float().view(r, k, 2, h, w)
    total = maps.new_zeros((), dtype=torch.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cy = (cells[..., 1] + dy).clamp(0, h - 1).long()
            cx = (cells[..., 0] + dx).clamp(0, w - 1).long()
            pred = flat[rows, ids, :, cy, cx]  # (R, P, K, 2)
            target = torch.stack([joints[..., 1] - cy, joints[..., 0] - cx], -1)
            total = total + ((pred - target).abs().sum(-1) * v).sum()
    return total / (9 * v.sum().clamp(min=1))


def _focal(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
           alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on sigmoid maps with Gaussian targets, summed
    and divided by the number of peaks (target ≈ 1)."""
    p = pred.clamp(1e-4, 1 - 1e-4)
    peak = (target > 0.99).float()
    pos = -(1 - p) ** alpha * torch.log(p) * peak
    neg = -((1 - target) ** beta) * p**alpha * torch.log(1 - p) * (1 - peak)
    return ((pos + neg) * weight).sum() / (peak * weight).sum().clamp(min=1)


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=torch.float32).view(h, 1).expand(h, w)
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, w).expand(h, w)
    return ys, xs


def decode_movenet(maps: dict[str, torch.Tensor], input_size: int,
                   centre_cells: torch.Tensor | None = None) -> torch.Tensor:
    """MoveNet's single-pose decoding, batched: (B, 17, 3) (x, y, score) in input pixels.
    `centre_cells` (B, 2) (row, column) imposes the person centre instead of step 1."""
    heat = maps["kpt_heatmap"].float()  # (B, K, h, w)
    b, k, h, w = heat.shape
    ys, xs = _grid(h, w, heat.device)
    if centre_cells is None:
        center = maps["center"].float()[:, 0]  # (B, h, w)
        # 1. The person centre: centre heatmap weighted by closeness to the crop's middle.
        weight = (1.0 / (torch.sqrt((ys - h / 2) ** 2 + (xs - w / 2) ** 2) + 1.8)).half().float()
        idx = (center * weight).flatten(1).argmax(1)
        cy, cx = torch.div(idx, w, rounding_mode="floor"), idx % w
    else:
        cy, cx = centre_cells.long().to(heat.device).unbind(-1)
    rows = torch.arange(b, device=heat.device)
    # 2. Joints regressed from the centre (channels 2j, 2j+1 = dy, dx in heatmap cells).
    reg = maps["kpt_regress"].float()[rows, :, cy, cx].view(b, k, 2)
    ry = cy.float().view(b, 1) + reg[..., 0]
    rx = cx.float().view(b, 1) + reg[..., 1]
    # 3. Each joint's heatmap peak, weighted by closeness to its regressed position.
    dist = torch.sqrt((ys.view(1, 1, h, w) - ry.view(b, k, 1, 1)) ** 2
                      + (xs.view(1, 1, h, w) - rx.view(b, k, 1, 1)) ** 2)
    jdx = (heat / (dist + CENTER_BIAS)).flatten(2).argmax(2)  # (B, K)
    jy, jx = torch.div(jdx, w, rounding_mode="floor"), jdx % w
    joints = torch.arange(k, device=heat.device).view(1, k)
    r = rows.view(b, 1)
    offsets = maps["kpt_offset"].float().view(b, k, 2, h, w)[r, joints, :, jy, jx]  # (B, K, 2)
    score = heat[r, joints, jy, jx]
    y = (jy.float() + offsets[..., 0]) * float(np.float16(1 / h)) * input_size
    x = (jx.float() + offsets[..., 1]) * float(np.float16(1 / w)) * input_size
    # MoveNet's coordinates are fractions of the crop (0 = its top-left edge); ours count
    # from the first pixel's centre.
    return torch.stack([x - 0.5, y - 0.5, score], -1)
