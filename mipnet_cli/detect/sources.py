"""Where the person boxes of an image come from: a detector, a table of boxes by image id (a
detection-results file or ground-truth boxes) or the whole image (single-stage networks)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..checkpoints.zoo import (
    ZooEntry,
    default_entry,
    shipped_detector,
)
from ..core.errors import MipnetError
from ..core.hardware import pick_device
from ..core.results import Box, whole_image_boxes
from .boxes import load_box_file, load_gt_boxes
from .registry import open_detector
from .torchvision_detectors import DEFAULT_DETECTOR, PersonDetector, weights_cached
from .yolox import YoloxPersonDetector


class DetectorBoxes:
    """Person boxes found by a detector on each image. `entry` is the zoo entry of the shipped
    detector when that one runs because nothing else was named or could be had (`fallback`)."""

    source = "detector"

    def __init__(self, detector: PersonDetector | YoloxPersonDetector,
                 entry: ZooEntry | None = None, fallback: bool = False) -> None:
        self.detector = detector
        self.entry = entry
        self.fallback = fallback

    @property
    def demo(self) -> bool:
        """The detector is one trained on synthetic scenes only."""
        return self.entry is not None and self.entry.demo

    def boxes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[list[Box]]:
        return self.detector.detect(images)


class TableBoxes:
    """Person boxes looked up by image id (a detection-results file or ground-truth boxes)."""

    def __init__(self, table: dict[int, list[Box]], source: str, path: str = "") -> None:
        self.table = table
        self.source = source  # "file" | "gt"
        self.path = path

    def boxes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[list[Box]]:
        return [list(self.table.get(i, [])) for i in image_ids]

    def check_matches(self, image_ids: Sequence[int], what: str = "images") -> str:
        """How many of `image_ids` the table knows, as a line to show; MipnetError when it
        knows none of them (the ids of the file and of the inputs do not correspond)."""
        matched = sum(i in self.table for i in image_ids)
        if image_ids and not matched:
            known = sorted(self.table)
            sample = ", ".join(map(str, known[:5])) + (", ..." if len(known) > 5 else "")
            raise MipnetError(f"{self.path}: none of its image ids ({sample or 'none'}) is one "
                              f"of the {len(image_ids)} {what} (ids {min(image_ids)} to "
                              f"{max(image_ids)}); nothing to do")
        return f"boxes from {self.path} for {matched} of {len(image_ids)} {what}"


class WholeImage:
    """The whole image as the one "box" of each image: the input of whole-image (single-stage)
    networks, which find every person themselves."""

    source = "image"

    def boxes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[list[Box]]:
        return whole_image_boxes(images)


BoxSource = DetectorBoxes | TableBoxes | WholeImage


def detector_boxes(name: str | None, weights_path: str | os.PathLike | None,
                   score_thresh: float, nms_iou: float, device,
                   sizes: Sequence[int] | None = None) -> DetectorBoxes:
    """A person detector by name and/or weights file, with defaults.

    With neither, torchvision's COCO detector (DEFAULT_DETECTOR) when its weights are cached
    or can be downloaded, else the zoo's shipped default (the converted COCO YOLOX-Nano),
    marked `fallback`. A name alone that is the builder of a shipped zoo detector loads the
    shipped weights. `sizes`: the detector's input sizes (see `DetectorBase`).
    """
    def build(builder: str | None, path) -> PersonDetector | YoloxPersonDetector:
        return open_detector(builder, path, score_thresh=score_thresh, nms_iou=nms_iou,
                             device=device, sizes=sizes)

    if name is not None and weights_path is None:
        shipped = shipped_detector(name)
        if shipped is not None:
            return DetectorBoxes(build(name, shipped.local_path()), shipped)
    default = default_entry("detector")
    default_path = default.local_path() if default is not None else None
    try:
        return DetectorBoxes(build(name or DEFAULT_DETECTOR, weights_path))
    except MipnetError:
        if (name is not None or weights_path is not None or default_path is None
                or weights_cached(DEFAULT_DETECTOR)):
            raise
    return DetectorBoxes(build(default.builder, default_path), default, fallback=True)


def box_source(*, boxes: str | os.PathLike | None = None, gt: str | os.PathLike | None = None,
               detector: str | None = None, detector_weights: str | os.PathLike | None = None,
               det_thresh: float | None = None, det_nms: float = 0.5,
               det_sizes: Sequence[int] | None = None,
               device: str | torch.device | None = None, whole_image: bool = False
               ) -> BoxSource:
    """Where person boxes come from: a COCO detection-results file (`det_thresh` default 0, as
    in the official evaluation), else the boxes of the annotation file `gt` unless a detector
    is named, else a detector (see `detector_boxes`; `det_thresh` default 0.5; `det_sizes`
    its input sizes). For a `whole_image` network the whole image, and no box source may be
    named."""
    if whole_image:
        named = [n for n, v in (("--boxes", boxes), ("--detector", detector),
                                ("--detector-weights", detector_weights),
                                ("--det-size", det_sizes)) if v is not None]
        if named:
            raise MipnetError(f"this is a single-stage network: it finds the people itself; "
                              f"leave out {', '.join(named)}")
        return WholeImage()
    if boxes is not None and (detector is not None or detector_weights is not None):
        raise MipnetError("a box file and a detector are two box sources: give only one")
    gt_boxes = gt is not None and detector is None and detector_weights is None
    if det_sizes is not None and (boxes is not None or gt_boxes):
        raise MipnetError("--det-size sets the detector's input size, and the boxes come from "
                          f"{'--boxes' if boxes is not None else '--gt'}: leave it out")
    if boxes is not None:
        return TableBoxes(load_box_file(boxes, score_thresh=det_thresh or 0.0), "file",
                          str(boxes))
    if gt_boxes:
        return TableBoxes(load_gt_boxes(gt), "gt", str(gt))
    return detector_boxes(detector, detector_weights, 0.5 if det_thresh is None else det_thresh,
                          det_nms, pick_device(device), det_sizes)
