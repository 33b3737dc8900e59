"""Multi-Instance Modulation Block (MIMB): squeeze-excite gate × λ-embedding gate."""

from __future__ import annotations

import torch
from torch import nn


class MIMB(nn.Module):
    """`out = x · F_ex(F_sq(x)) · F_em(λ)`, one gate value per channel.

    Parameter names follow the official `SELambdaLayer` (`fc`, `fc_lambda`) so that released
    checkpoints load unchanged.
    """

    def __init__(self, channels: int, lambda_dim: int = 2, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )
        self.fc_lambda = nn.Sequential(
            nn.Linear(lambda_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        excite = self.fc(nn.functional.adaptive_avg_pool2d(x, 1).view(b, c)).view(b, c, 1, 1)
        embed = self.fc_lambda(lam.to(x.dtype)).view(b, c, 1, 1)
        return x * excite * embed


class MIMBGroup(nn.Module):
    """One MIMB per branch of a multi-resolution feature list (official `SELambdaModule`)."""

    def __init__(self, channels: list[int], lambda_dim: int = 2, reduction: int = 4) -> None:
        super().__init__()
        self.se_layers = nn.ModuleList(MIMB(c, lambda_dim, reduction) for c in channels)

    def forward(self, xs: list[torch.Tensor], lam: torch.Tensor) -> list[torch.Tensor]:
        return [layer(x, lam) for layer, x in zip(self.se_layers, xs, strict=True)]
