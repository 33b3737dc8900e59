"""ResNet SimpleBaseline pose network (Xiao et al., ECCV 2018) with optional MIMBs.

Parameter names equal the official `pose_resnet` / `pose_resnet_se_lambda`.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BN_MOMENTUM, BasicBlock, Bottleneck, init_pose_weights, make_layer
from .config import ModelConfig
from .mimb import MIMBGroup
from .pose import PoseNet

RESNET_SPECS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}  # kernel -> (padding, output_padding)


class PoseResNet(PoseNet):
    """ResNet encoder + deconvolution head; MIMBs before the selected encoder layers."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}")
        block, layers = RESNET_SPECS[config.depth]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes, layer_inputs = 64, []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            layer_inputs.append(inplanes)
            setattr(self, f"layer{i + 1}",
                    make_layer(block, inplanes, planes, blocks, stride=1 if i == 0 else 2))
            inplanes = planes * block.expansion

        deconv: list[nn.Module] = []
        for planes, kernel in zip(config.deconv_filters, config.deconv_kernels, strict=True):
            padding, output_padding = _DECONV_PADDING[kernel]
            deconv += [
                nn.ConvTranspose2d(inplanes, planes, kernel, stride=2, padding=padding,
                                   output_padding=output_padding, bias=False),
                nn.BatchNorm2d(planes, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            inplanes = planes
        self.deconv_layers = nn.Sequential(*deconv)
        k = config.final_conv_kernel
        self.final_layer = nn.Conv2d(inplanes, config.num_joints, k, 1, 1 if k == 3 else 0)

        for i, on in enumerate(config.active_se):
            if on:
                setattr(self, f"layer{i + 1}_se",
                        MIMBGroup([layer_inputs[i]], config.lambda_dim, config.se_reduction))
        init_pose_weights(self)

    def _layers_from(self, x: torch.Tensor, start: int, stop: int, lam: torch.Tensor | None):
        for i in range(start, stop):
            mimb = getattr(self, f"layer{i + 1}_se", None)
            if mimb is not None:
                x = mimb([x], lam)[0]
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return [self._layers_from(x, 0, self.split_point, None)]

    def tail(self, feats: list[torch.Tensor], lam: torch.Tensor | None) -> torch.Tensor:
        x = self._layers_from(feats[0], self.split_point, 4, lam)
        return self.final_layer(self.deconv_layers(x))
