"""What every person detector shares: its settings, the check of the images it is given, and the
batched detection loop (one or several input sizes, merged by NMS)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision

from ..core.results import Box

SIZE_STEP = 32  # detector input sizes are multiples of the largest stride of the families
SIZE_RANGE = (64, 4096)

Candidates = tuple[torch.Tensor, torch.Tensor]  # (n, 4) xyxy in image pixels, (n,) scores


def check_sizes(sizes: Sequence[int] | None) -> tuple[int, ...] | None:
    """Detector input sizes as a tuple without repeats (None: the detector's own); a ValueError
    names a size that is not a multiple of 32 between 64 and 4096."""
    if sizes is None:
        return None
    out = tuple(dict.fromkeys(int(s) for s in sizes))
    if not out:
        raise ValueError("give at least one detector input size")
    for s in out:
        if s % SIZE_STEP or not SIZE_RANGE[0] <= s <= SIZE_RANGE[1]:
            raise ValueError(f"detector input size {s}: use a multiple of {SIZE_STEP} between "
                             f"{SIZE_RANGE[0]} and {SIZE_RANGE[1]}")
    return out


class DetectorBase:
    """Settings common to the detector families; `detect(images)` returns, per RGB uint8
    (H, W, 3) image, its person boxes best first.

    `sizes` are the input sizes the network runs at (each family says what a size is; None:
    the network's own). With several, the detector runs once per size and the person boxes of
    all sizes go through one more NMS at `nms_iou`: small people found at a large size, large
    people at a small one. A family implements `_candidates(images, size)`.
    """

    def __init__(self, name: str, score_thresh: float, nms_iou: float, max_detections: int,
                 batch_size: int, device: str | torch.device,
                 sizes: Sequence[int] | None = None) -> None:
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
        self.sizes = check_sizes(sizes)

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

    def _candidates(self, images: Sequence[np.ndarray], size: int | None) -> list[Candidates]:
        """Per image, its person boxes above the score threshold after the family's own NMS,
        at input size `size` (None: the network's own)."""
        raise NotImplementedError

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[list[Box]]:
        """Person boxes for each RGB uint8 (H, W, 3) image, best first, ids 0, 1, ... per image.

        An image with no pixels yields no boxes.
        """
        results: list[list[Box]] = [[] for _ in images]
        todo = self.non_empty(images)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            batch = [images[i] for i in chunk]
            per_size = [self._candidates(batch, size) for size in self.sizes or (None,)]
            for k, i in enumerate(chunk):
                results[i] = self._merge([found[k] for found in per_size])
        return results

    def _merge(self, parts: list[Candidates]) -> list[Box]:
        """Boxes best first, capped at `max_detections`; several sizes' boxes share one NMS."""
        xyxy = torch.cat([p[0] for p in parts])
        scores = torch.cat([p[1] for p in parts])
        if len(parts) > 1:
            order = torchvision.ops.nms(xyxy.float(), scores.float(), self.nms_iou)
        else:
            order = torch.argsort(scores, descending=True)
        order = order[: self.max_detections]
        boxes_np = xyxy[order].double().cpu().numpy()
        scores_np = scores[order].double().cpu().numpy()
        return [Box(xyxy=b, score=float(s), source="detector", id=k)
                for k, (b, s) in enumerate(zip(boxes_np, scores_np, strict=True))]
