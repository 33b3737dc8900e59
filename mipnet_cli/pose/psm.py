"""A learned pose score for any pose: the single-stage network's PSM (`--rescore psm`).

The top-down path scores a pose by its box score and mean keypoint confidence (the official
rescoring). `PsmScorer` replaces the second factor by the OKS the single-stage network's pose
scoring module predicts for the pose: the whole image goes through its backbone once, and each
pose is scored from features sampled at its own keypoints (the feature alignment of
`PfsPoseNet`) at the location and level its pseudo box is assigned to in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import MipnetError
from ..core.geometry import affine_matrices, affine_transform_points
from ..core.results import whole_image_boxes
from ..models.pfs import PfsPoseNet
from .engine import PoseEstimator


class PsmScorer:
    """Predicted OKS of poses given in image pixels, from a single-stage checkpoint."""

    def __init__(self, estimator: PoseEstimator) -> None:
        model = estimator.model
        if not isinstance(model, PfsPoseNet) or not model.config.feature_align:
            raise MipnetError("--rescore psm needs a single-stage checkpoint with feature "
                              "alignment (its PSM scores poses from their keypoints)")
        self.estimator = estimator
        self.model: PfsPoseNet = model

    @classmethod
    def from_checkpoint(cls, path: str, device: str | torch.device | None = None) -> PsmScorer:
        return cls(PoseEstimator.from_checkpoint(path, device=device))

    @torch.no_grad()
    def score(self, images: Sequence[np.ndarray], poses: Sequence[np.ndarray]
              ) -> list[np.ndarray]:
        """For each image, the predicted OKS (P,) of its poses (P, K, 2+) in image pixels."""
        est = self.estimator
        boxes = np.array([b[0].xywh for b in whole_image_boxes(images)])
        centers, scales = est.boxes_to_center_scale(boxes)
        h, w = est.input_size
        forward = affine_matrices(centers, scales, (w, h))
        out = []
        for i, kps in enumerate(poses):
            if len(kps) == 0:
                out.append(np.zeros(0, np.float32))
                continue
            crop = est.crops(images, centers[i:i + 1], scales[i:i + 1], np.array([i]))
            x = crop.to(next(self.model.parameters()).dtype)
            feats = self.model.trunk(x)
            xy = affine_transform_points(np.asarray(kps)[..., :2], forward[i])
            out.append(self.model.score_poses(feats, torch.as_tensor(xy, dtype=x.dtype,
                                                                      device=x.device)))
        return out
