"""What every person detector shares: its settings and the check of the images it is given."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class DetectorBase:
    """Settings common to the detector families; `detect(images)` returns, per RGB uint8
    (H, W, 3) image, its person boxes best first."""

    def __init__(self, name: str, score_thresh: float, nms_iou: float, max_detections: int,
                 batch_size: int, device: str | torch.device) -> None:
        if not 0.0 <= score_thresh <= 1.0 or not 0.0 <= nms_iou <= 1.0:
            raise ValueError("score_thresh and nms_iou must lie in [0, 1]")
        if max_detections < 1 or batch_size < 1:
            raise ValueError("max_detections and batch_size must be at least 1")
        self.name = name
        self.score_thresh = float(score_thresh)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

    @staticmethod
    def non_empty(images: Sequence[np.ndarray]) -> list[int]:
        """Indices of the images that have pixels; a ValueError for anything not RGB uint8."""
        todo = []
        for i, img in enumerate(images):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"image {i}: expected RGB uint8 (H, W, 3), got {img.dtype} "
                                 f"{img.shape}")
            if img.shape[0] > 0 and img.shape[1] > 0:
                todo.append(i)
        return todo
