"""HRNet pose network (Sun et al., CVPR 2019) with optional MIMBs (MIPNet-HRNet).

Module and parameter names equal the official `pose_hrnet` / `pose_hrnet_se_lambda`, so their
checkpoints load with `strict=True`.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BLOCKS, BN_MOMENTUM, Bottleneck, init_pose_weights, make_layer
from .config import ModelConfig, StageSpec
from .mimb import MIMBGroup
from .pose import PoseNet


class HighResolutionModule(nn.Module):
    """Parallel branches followed by an all-to-all multi-resolution fusion."""

    def __init__(self, spec: StageSpec, in_channels: list[int], multi_scale_output: bool) -> None:
        super().__init__()
        block = BLOCKS[spec.block]
        self.num_branches = spec.num_branches
        self.branches = nn.ModuleList(
            make_layer(block, in_channels[i], spec.num_channels[i], spec.num_blocks[i])
            for i in range(self.num_branches)
        )
        self.out_channels = [c * block.expansion for c in spec.num_channels]
        self.fuse_layers = self._make_fuse_layers(multi_scale_output)
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self, multi_scale_output: bool) -> nn.ModuleList | None:
        if self.num_branches == 1:
            return None
        ch = self.out_channels
        fuse_layers = []
        for i in range(self.num_branches if multi_scale_output else 1):
            row: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:  # lower resolution: 1x1 conv then nearest upsampling
                    row.append(nn.Sequential(
                        nn.Conv2d(ch[j], ch[i], 1, 1, 0, bias=False),
                        nn.BatchNorm2d(ch[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                    ))
                elif j == i:
                    row.append(None)
                else:  # higher resolution: strided 3x3 convs, ReLU between them
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out_c = ch[i] if last else ch[j]
                        layers = [nn.Conv2d(ch[j], out_c, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(out_c)]
                        if not last:
                            layers.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        return nn.ModuleList(fuse_layers)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            fused.append(self.relu(y))
        return fused


def _make_transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    """Adapt branch channels and add the new, lower-resolution branches."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(None if c == pre[i] else nn.Sequential(
                nn.Conv2d(pre[i], c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                nn.ReLU(inplace=True)))
            continue
        steps = []
        for j in range(i + 1 - len(pre)):
            out_c = c if j == i - len(pre) else pre[-1]
            steps.append(nn.Sequential(
                nn.Conv2d(pre[-1], out_c, 3, 2, 1, bias=False), nn.BatchNorm2d(out_c),
                nn.ReLU(inplace=True)))
        layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class PoseHRNet(PoseNet):
    """HRNet-W<C> pose network; with `num_instances > 1` it is MIPNet-HRNet.

    The forward pass is split at the first MIMB: `trunk()` (λ-independent) and `tail()`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        stem, planes, blocks = config.stem_width, config.layer1_planes, config.layer1_blocks
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(Bottleneck, stem, planes, blocks)

        pre = [planes * Bottleneck.expansion]
        stage_inputs: list[list[int]] = []
        for k, spec in enumerate(config.stages, start=1):
            cur = [c * BLOCKS[spec.block].expansion for c in spec.num_channels]
            setattr(self, f"transition{k}", _make_transition(pre, cur))
            stage_inputs.append(cur)
            modules = []
            last_stage = k == len(config.stages)
            for m in range(spec.num_modules):
                multi = not (last_stage and m == spec.num_modules - 1)
                modules.append(HighResolutionModule(spec, cur, multi))
                cur = modules[-1].out_channels
            setattr(self, f"stage{k + 1}", nn.Sequential(*modules))
            pre = cur
        k = config.final_conv_kernel
        self.final_layer = nn.Conv2d(pre[0], config.num_joints, k, 1, 1 if k == 3 else 0)

        se = config.active_se
        for i in range(3):
            if se[i]:
                setattr(self, f"stage{i + 1}_se",
                        MIMBGroup(stage_inputs[i], config.lambda_dim, config.se_reduction))
        if se[3]:
            self.stage4_se = MIMBGroup([pre[0]], config.lambda_dim, config.se_reduction)
        init_pose_weights(self)

    def _mimb(self, point: int) -> MIMBGroup | None:
        return getattr(self, f"stage{point + 1}_se", None)

    def _step(self, k: int, feats: list[torch.Tensor], lam: torch.Tensor | None) -> list:
        """Transition k+1, the MIMBs before stage k+2 if any, then stage k+2."""
        # Existing branches pass through (or are adapted); new branches grow from the last one.
        transition = getattr(self, f"transition{k + 1}")
        padded = feats + [feats[-1]] * (len(transition) - len(feats))
        xs = [f if t is None else t(feats[-1]) for t, f in zip(transition, padded, strict=True)]
        mimb = self._mimb(k)
        if mimb is not None:
            xs = mimb(xs, lam)
        return getattr(self, f"stage{k + 2}")(xs)

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        feats = [self.layer1(x)]
        for k in range(min(self.split_point, 3)):
            feats = self._step(k, feats, None)
        return feats

    def tail(self, feats: list[torch.Tensor], lam: torch.Tensor | None) -> torch.Tensor:
        for k in range(min(self.split_point, 3), 3):
            feats = self._step(k, feats, lam)
        y = feats[0]
        mimb = self._mimb(3)
        if mimb is not None:
            y = mimb([y], lam)[0]
        return self.final_layer(y)
