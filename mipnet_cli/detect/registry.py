"""Opening a person detector by name or weights file, whatever its family (torchvision or YOLOX)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checkpoints.detector import DETECTOR_FORMAT, YOLOX_BUILDERS, read_detector_meta
from ..core.errors import MipnetError
from .torchvision_detectors import PersonDetector
from .yolox import YoloxPersonDetector


def open_detector(name: str | None, weights_path: str | os.PathLike | None = None,
                  **kwargs: Any) -> PersonDetector | YoloxPersonDetector:
    """A person detector of any family: a YOLOX checkpoint (ours, `mipnet weights convert`)
    when the file or the name says so, else a torchvision builder (see `PersonDetector`).
    `kwargs` are the shared settings: score_thresh, nms_iou, device, batch_size, ..."""
    is_yolox_file = (weights_path is not None and Path(weights_path).is_file()
                     and read_detector_meta(weights_path).get("format") == DETECTOR_FORMAT)
    if is_yolox_file or name in YOLOX_BUILDERS:
        if weights_path is None:
            raise MipnetError(f"detector {name} needs a weights file (--detector-weights): "
                              "convert the published ONNX file with `mipnet weights convert`")
        detector = YoloxPersonDetector.from_file(weights_path, **kwargs)
        if name is not None and name != detector.name:
            raise MipnetError(f"{weights_path}: holds a {detector.name} detector, not {name}")
        return detector
    if name is None:
        raise MipnetError(f"{weights_path}: name the detector builder (--detector) for this "
                          "weights file")
    return PersonDetector(name, weights_path=weights_path, **kwargs)
