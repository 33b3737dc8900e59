"""The interface every pose network shares: λ-conditioned forward and the shared-trunk path."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def instance_lambdas(num_instances: int) -> torch.Tensor:
    """The λ rows that select each instance: row i is one-hot at i (length max(2, N)).

    For N = 2 this is the official encoding: [1, 0] the box's own person, [0, 1] the nearest
    other person.
    """
    return torch.eye(max(2, num_instances))[:num_instances]


def soft_lambda(a: float) -> torch.Tensor:
    """The soft selector [a, 1 - a] that interpolates between the two instances."""
    return torch.tensor([[a, 1.0 - a]])


class PoseNet(nn.Module):
    """Base class: subclasses define `trunk` (λ-independent) and `tail` (from the first MIMB)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if any(v % 32 for v in config.image_size):
            raise ValueError(f"input size {config.image_size} must be a multiple of 32 "
                             "(the coarsest features are 1/32 of the input)")
        self.config = config
        se = config.active_se
        # Index of the first MIMB; everything before it is computed once per crop.
        self.split_point = se.index(True) if any(se) else len(se)

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def tail(self, feats: list[torch.Tensor], lam: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _check_lambda(self, lam: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.split_point == len(self.config.active_se):
            return None
        if lam is None:
            raise ValueError("this is a multi-instance network: pass lam of shape (B, λ-dim)")
        if lam.dim() != 2 or lam.shape[0] != batch or lam.shape[1] != self.config.lambda_dim:
            raise ValueError(
                f"lam must have shape ({batch}, {self.config.lambda_dim}), got {tuple(lam.shape)}"
            )
        return lam

    def forward(self, x: torch.Tensor, lam: torch.Tensor | None = None) -> torch.Tensor:
        """Heatmaps (B, K, H/4, W/4) for crops x (B, 3, H, W) and selectors lam (B, λ-dim)."""
        lam = self._check_lambda(lam, x.shape[0])
        return self.tail(self.trunk(x), lam)

    def forward_multi(self, x: torch.Tensor, lams: torch.Tensor | None = None) -> torch.Tensor:
        """Heatmaps (B, L, K, H/4, W/4) for every row of lams (L, λ-dim), trunk computed once.

        Equals `forward` run once per λ (in eval mode). With lams None, all instances of the
        network are run.
        """
        if lams is None:
            lams = instance_lambdas(self.config.num_instances)
        lams = lams.to(device=x.device, dtype=x.dtype)
        b, n = x.shape[0], lams.shape[0]
        feats = self.trunk(x)
        if self.split_point == len(self.config.active_se):  # no MIMB: one pass serves all λ
            out = self.tail(feats, None)
            return out.unsqueeze(1).expand(b, n, *out.shape[1:])
        if self.training:
            # One batch of B·L rows, so that batch norm sees every instance together.
            feats = [f.repeat_interleave(n, dim=0) for f in feats]
            out = self.tail(feats, lams.repeat(b, 1))
            return out.view(b, n, *out.shape[1:])
        # Inference: the tail once per λ on the shared features, which avoids copying them
        # L times and keeps the working set small (faster at large batches on a CPU).
        return torch.stack([self.tail(feats, lam.expand(b, -1)) for lam in lams], dim=1)
