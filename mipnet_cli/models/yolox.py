"""YOLOX (Ge et al., 2021) as a person detector: CSPDarknet + PAFPN + decoupled head.

The layout and parameter names follow the published YOLOX networks (`backbone.backbone.*`,
`backbone.*` for the PAFPN, `head.*`), with batch norm folded into each convolution's bias as
in their exported ONNX files. `YOLOX.forward` returns the raw head outputs of all grid cells,
(B, cells, 5 + classes) = (dx, dy, log w, log h, objectness, class scores), the last two after
the sigmoid; `decode_outputs` turns them into boxes in input pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class YoloxConfig:
    """Width and depth multipliers as in the YOLOX model zoo (Nano: 0.25 / 0.33, depthwise)."""

    width: float = 0.25
    depth: float = 0.33
    depthwise: bool = True
    num_classes: int = 80
    input_size: tuple[int, int] = (416, 416)  # (height, width)
    strides: tuple[int, ...] = (8, 16, 32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> YoloxConfig:
        d = dict(d)
        for key in ("input_size", "strides"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


class BaseConv(nn.Module):
    """Convolution (batch norm folded into its bias) + SiLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(x), inplace=True)


class DWConv(nn.Module):
    """Depthwise k×k + pointwise 1×1, each with SiLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.dconv = BaseConv(cin, cin, k, stride, groups=cin)
        self.pconv = BaseConv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def _conv(depthwise: bool):
    return DWConv if depthwise else BaseConv


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, shortcut: bool, depthwise: bool) -> None:
        super().__init__()
        self.conv1 = BaseConv(cin, cout, 1)
        self.conv2 = _conv(depthwise)(cout, cout, 3)
        self.use_add = shortcut and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """Cross-stage partial block: half the channels through n bottlenecks, then concatenated."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool, depthwise: bool) -> None:
        super().__init__()
        hidden = cout // 2
        self.conv1 = BaseConv(cin, hidden, 1)
        self.conv2 = BaseConv(cin, hidden, 1)
        self.conv3 = BaseConv(2 * hidden, cout, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, depthwise)
                                 for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv1(x), self.conv2(x)
        return self.conv3(torch.cat([self.m(x1), x2], 1))


class SPPBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = cin // 2
        self.conv1 = BaseConv(cin, hidden, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in kernels])
        self.conv2 = BaseConv(hidden * (len(kernels) + 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *[m(x) for m in self.m]], 1))


class Focus(nn.Module):
    """Space-to-depth (2×2 pixels -> 4× channels), then a 3×3 convolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = BaseConv(cin * 4, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tl, tr = x[..., ::2, ::2], x[..., ::2, 1::2]
        bl, br = x[..., 1::2, ::2], x[..., 1::2, 1::2]
        return self.conv(torch.cat([tl, bl, tr, br], 1))


class CSPDarknet(nn.Module):
    def __init__(self, width: float, depth: float, depthwise: bool) -> None:
        super().__init__()
        conv = _conv(depthwise)
        c = int(width * 64)
        n = max(round(depth * 3), 1)
        self.stem = Focus(3, c)
        self.dark2 = nn.Sequential(conv(c, c * 2, 3, 2), CSPLayer(c * 2, c * 2, n, True, depthwise))
        self.dark3 = nn.Sequential(conv(c * 2, c * 4, 3, 2),
                                   CSPLayer(c * 4, c * 4, n * 3, True, depthwise))
        self.dark4 = nn.Sequential(conv(c * 4, c * 8, 3, 2),
                                   CSPLayer(c * 8, c * 8, n * 3, True, depthwise))
        self.dark5 = nn.Sequential(conv(c * 8, c * 16, 3, 2), SPPBottleneck(c * 16, c * 16),
                                   CSPLayer(c * 16, c * 16, n, False, depthwise))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        return c3, c4, self.dark5(c4)


class PAFPN(nn.Module):
    """Top-down then bottom-up feature pyramid: (P3, P4, P5) at strides 8, 16, 32."""

    def __init__(self, width: float, depth: float, depthwise: bool) -> None:
        super().__init__()
        conv = _conv(depthwise)
        c3, c4, c5 = (int(v * width) for v in (256, 512, 1024))
        n = max(round(depth * 3), 1)
        self.backbone = CSPDarknet(width, depth, depthwise)
        self.lateral_conv0 = BaseConv(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, False, depthwise)
        self.reduce_conv1 = BaseConv(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, False, depthwise)
        self.bu_conv2 = conv(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, False, depthwise)
        self.bu_conv1 = conv(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, False, depthwise)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2, x1, x0 = self.backbone(x)
        fpn0 = self.lateral_conv0(x0)
        f = self.C3_p4(torch.cat([F.interpolate(fpn0, scale_factor=2.0, mode="nearest"), x1], 1))
        fpn1 = self.reduce_conv1(f)
        p3 = self.C3_p3(torch.cat([F.interpolate(fpn1, scale_factor=2.0, mode="nearest"), x2], 1))
        p4 = self.C3_n3(torch.cat([self.bu_conv2(p3), fpn1], 1))
        p5 = self.C3_n4(torch.cat([self.bu_conv1(p4), fpn0], 1))
        return p3, p4, p5


class YOLOXHead(nn.Module):
    """Per level: a 1×1 stem, then two 3×3 branches for classes and for box + objectness."""

    def __init__(self, num_classes: int, width: float, depthwise: bool) -> None:
        super().__init__()
        conv = _conv(depthwise)
        hidden = int(256 * width)
        ins = [int(v * width) for v in (256, 512, 1024)]
        self.stems = nn.ModuleList([BaseConv(c, hidden, 1) for c in ins])
        self.cls_convs = nn.ModuleList([nn.Sequential(conv(hidden, hidden, 3),
                                                      conv(hidden, hidden, 3)) for _ in ins])
        self.reg_convs = nn.ModuleList([nn.Sequential(conv(hidden, hidden, 3),
                                                      conv(hidden, hidden, 3)) for _ in ins])
        self.cls_preds = nn.ModuleList([nn.Conv2d(hidden, num_classes, 1) for _ in ins])
        self.reg_preds = nn.ModuleList([nn.Conv2d(hidden, 4, 1) for _ in ins])
        self.obj_preds = nn.ModuleList([nn.Conv2d(hidden, 1, 1) for _ in ins])

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        outs = []
        for k, x in enumerate(feats):
            x = self.stems[k](x)
            cls = self.cls_preds[k](self.cls_convs[k](x))
            reg_feat = self.reg_convs[k](x)
            reg, obj = self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat)
            outs.append(torch.cat([reg, obj.sigmoid(), cls.sigmoid()], 1).flatten(2))
        return torch.cat(outs, 2).transpose(1, 2)


class YOLOX(nn.Module):
    """The whole detector; input (B, 3, H, W) BGR in 0-255, H and W multiples of 32."""

    def __init__(self, config: YoloxConfig | None = None) -> None:
        super().__init__()
        self.config = config or YoloxConfig()
        c = self.config
        self.backbone = PAFPN(c.width, c.depth, c.depthwise)
        self.head = YOLOXHead(c.num_classes, c.width, c.depthwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def decode_outputs(raw: torch.Tensor, input_hw: tuple[int, int],
                   strides: tuple[int, ...] = (8, 16, 32)) -> torch.Tensor:
    """(B, cells, 5 + C) raw outputs -> the same with (cx, cy, w, h) in input pixels."""
    h, w = input_hw
    grids, scale = [], []
    for s in strides:
        gy, gx = torch.meshgrid(torch.arange(h // s, device=raw.device),
                                torch.arange(w // s, device=raw.device), indexing="ij")
        grids.append(torch.stack([gx, gy], -1).reshape(-1, 2))
        scale.append(torch.full((grids[-1].shape[0], 1), float(s), device=raw.device))
    grid = torch.cat(grids).to(raw.dtype)
    stride = torch.cat(scale).to(raw.dtype)
    xy = (raw[..., :2] + grid) * stride
    wh = raw[..., 2:4].exp() * stride
    return torch.cat([xy, wh, raw[..., 4:]], -1)
