"""Result types: plain dataclasses over numpy arrays, ready for JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Box:
    """A person box in image pixels."""

    xyxy: np.ndarray  # (4,) float
    score: float = 1.0
    source: str = "detector"  # "detector" | "file" | "gt" | "image" (the whole image)
    id: int = 0

    @property
    def xywh(self) -> list[float]:
        x0, y0, x1, y1 = (float(v) for v in self.xyxy)
        return [x0, y0, x1 - x0, y1 - y0]


def person_boxes(boxes: list[Box]) -> list[Box]:
    """The person boxes among `boxes`: without the whole-image "box" of whole-image families."""
    return [b for b in boxes if b.source != "image"]


@dataclass
class Pose:
    """One person's keypoints (K,3: x, y, confidence) in image pixels."""

    keypoints: np.ndarray
    score: float
    box_id: int
    instance: int  # index of the λ value that produced it (0 = the box's own person)
    box_xywh: list[float] = field(default_factory=list)
    area: float = 0.0
    track_id: int | None = None
    psm: float | None = None  # the OKS a pose scoring module predicts for it, if one scored it
    recovered: bool = False  # found by the crowd-recovery (whole-image) pass, not in a box


@dataclass
class ImagePoses:
    """Everything found in one image or video frame."""

    path: str
    width: int
    height: int
    image_id: int = 0
    boxes: list[Box] = field(default_factory=list)
    poses: list[Pose] = field(default_factory=list)
    frame_index: int | None = None
    timestamp: float | None = None


def whole_image_boxes(images: Sequence[np.ndarray]) -> list[list[Box]]:
    """One box covering each whole image: what whole-image families take as their "crop"."""
    return [[Box(np.array([0.0, 0.0, img.shape[1], img.shape[0]]), 1.0, "image", 0)]
            for img in images]
