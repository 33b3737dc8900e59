"""The interface every pose network shares with the engine.

A family brings its own conventions through four members: `input_mean` / `input_std` (how
crops are normalised), `forward_multi` (its outputs for every λ, trunk computed once),
`flip_merge` (how the outputs of a mirrored crop are folded in) and `decode` (outputs ->
(B, L, K, 3) keypoints in image pixels). The defaults are the heatmap networks' (HRNet,
SimpleBaseline): ImageNet normalisation, the official flip test with its one-pixel shift, and
argmax + quarter offset (or DARK).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.geometry import IMAGENET_MEAN, IMAGENET_STD
from .config import ModelConfig
from .decode import decode_dark, decode_heatmaps, flip_average, flip_permutation, heatmap_to_image


def instance_lambdas(num_instances: int) -> torch.Tensor:
    """The λ rows that select each instance: row i is one-hot at i (length max(2, N)).

    For N = 2 this is the official encoding: [1, 0] the box's own person, [0, 1] the nearest
    other person.
    """
    return torch.eye(max(2, num_instances))[:num_instances]


def soft_lambda(a: float) -> torch.Tensor:
    """The soft selector [a, 1 - a] that interpolates between the two instances."""
    return torch.tensor([[a, 1.0 - a]])


@dataclass
class Candidates:
    """Decoded poses of B inputs, L slots each: keypoints (B, L, K, 3) in image pixels.

    Families that score their own poses fill `scores` (B, L; 0 marks an empty slot) and
    `areas` (B, L; the OKS scale of each pose); otherwise the engine scores by box and
    keypoint confidence and takes the box's area. `instances` (L,) is the λ index of each slot.
    `psm` (B, L): the OKS a pose scoring module predicts for each pose, for families with one.
    `boxes` (B, L, 4): each pose's own person box (x, y, w, h in image pixels), for whole-image
    families that predict one (it is the pose's box in the results and for tracking).
    """

    keypoints: np.ndarray
    scores: np.ndarray | None = None
    areas: np.ndarray | None = None
    instances: np.ndarray | None = None
    psm: np.ndarray | None = None
    boxes: np.ndarray | None = None


def per_instance(centers: np.ndarray, scales: np.ndarray, n: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each box's centre and scale (B, 2) repeated for its n instances: (B, n, 2) each."""
    return (np.repeat(centers[:, None], n, axis=1), np.repeat(scales[:, None], n, axis=1))


class PoseNet(nn.Module):
    """Base class: subclasses define `trunk` (λ-independent) and `tail` (from the first MIMB)."""

    input_mean: tuple[float, float, float] = IMAGENET_MEAN  # on the 0-1 scale, RGB
    input_std: tuple[float, float, float] = IMAGENET_STD
    outputs_heatmaps = True  # the outputs are (B, L, K, h, w) heatmaps
    cpu_batch: int | None = None  # crops per call that run fastest on a CPU (None: any)
    square_input = False  # the family only takes square crops
    whole_image = False  # the input is the whole image (letterboxed), not a person box
    crop_padding: float | None = None  # box padding of the crop (None: the engine's option)
    upscale = True  # crops smaller than the input are enlarged to fill it

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
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

    def flip_merge(self, out: torch.Tensor, flipped: torch.Tensor,
                   flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
        """Fold the outputs for horizontally mirrored crops into `out` (flip test)."""
        return flip_average(out, flipped, flip_pairs)

    def from_imagenet(self, x: torch.Tensor) -> torch.Tensor:
        """Crops normalised with ImageNet statistics (as the datasets give them) -> normalised
        as this network expects."""
        if (tuple(self.input_mean), tuple(self.input_std)) == (IMAGENET_MEAN, IMAGENET_STD):
            return x

        def column(v: Sequence[float]) -> torch.Tensor:
            return torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)

        rgb01 = x * column(IMAGENET_STD) + column(IMAGENET_MEAN)
        return (rgb01 - column(self.input_mean)) / column(self.input_std)

    def neutral_mimbs(self) -> None:
        """Make fresh MIMBs start as the identity on a pretrained single-instance network
        (families that can do so exactly; the default leaves them as initialised)."""

    def train_outputs(self, x: torch.Tensor, lams: torch.Tensor):
        """What the training loss needs for crops x and every λ (here: heatmaps)."""
        return self.forward_multi(x, lams)

    def train_loss(self, outputs, targets: torch.Tensor, weights: torch.Tensor,
                   meta: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of `train_outputs` against the dataset's heatmap targets (B, N,
        K, h, w) and weights (B, N, K, 1), or its `meta`: each instance's joints (B, N, K, 2)
        in crop pixels and `joints_vis` (B, N, K), every other person's `context_joints`
        (B, M, K, 2) and `context_vis`, whether each instance fell back to the box's own
        person (`fallback`, (B, N)) and, when training from a teacher, the teacher's
        `train_outputs` for λ = [1, 0] (`teacher`). Here MIPNet's multi-instance heatmap MSE."""
        from .losses import multi_instance_loss

        return multi_instance_loss(outputs.float(), targets, weights)

    def decode(self, out: torch.Tensor, centers: np.ndarray, scales: np.ndarray,
               dark: bool = False) -> np.ndarray:
        """(B, L, ...) outputs of crops with `centers`/`scales` (B, 2) -> (B, L, K, 3) keypoints
        (x, y, confidence) in image pixels."""
        c, s = per_instance(centers, scales, out.shape[1])
        preds, maxvals = (decode_dark if dark else decode_heatmaps)(out, c, s)
        return torch.cat([preds, maxvals], dim=-1).cpu().numpy()

    def decode_candidates(self, out: torch.Tensor, centers: np.ndarray, scales: np.ndarray,
                          dark: bool = False) -> Candidates:
        """`decode` as `Candidates`: one slot per λ, scored by the engine."""
        return Candidates(self.decode(out, centers, scales, dark))


class KeypointPoseNet(PoseNet):
    """A pose network whose outputs are keypoints (B, L, K, 3) = (x, y, confidence) in input
    pixels (0 at the first pixel's centre) rather than heatmaps."""

    input_mean = (0.0, 0.0, 0.0)
    input_std = (1 / 255, 1 / 255, 1 / 255)  # 0-255 RGB crops
    outputs_heatmaps = False

    def flip_merge(self, out: torch.Tensor, flipped: torch.Tensor,
                   flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
        """Average with the mirrored crop's keypoints: x mirrored, left/right joints swapped."""
        mirrored = flipped[..., flip_permutation(out.shape[-2], flip_pairs), :].clone()
        mirrored[..., 0] = self.config.image_size[1] - 1 - mirrored[..., 0]
        return (out + mirrored) / 2

    def decode(self, out: torch.Tensor, centers: np.ndarray, scales: np.ndarray,
               dark: bool = False) -> np.ndarray:
        c, s = per_instance(centers, scales, out.shape[1])
        h, w = self.config.image_size
        xy = heatmap_to_image(out[..., :2].float(), c, s, (w, h))
        return torch.cat([xy, out[..., 2:].float()], dim=-1).cpu().numpy()
