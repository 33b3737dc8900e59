"""mipnet: multi-person 2D pose annotation with Multi-Instance Pose Networks (MIPNet).

The public API, as torchvision and timm offer theirs::

    from mipnet_cli import Annotator, load_estimator, open_detector, read_image, annotate_video

Names load on first use, so `import mipnet_cli` (and the `mipnet` command's start) stays fast;
the folders below hold the rest (`docs/architecture.md` is the map).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module (under mipnet_cli) that defines it.
_EXPORTS: dict[str, str] = {
    "MipnetError": "core.errors",
    "Box": "core.results",
    "Pose": "core.results",
    "ImagePoses": "core.results",
    "KeypointSet": "core.keypoints",
    "get_keypoint_set": "core.keypoints",
    "build_model": "models.registry",
    "load_checkpoint": "checkpoints.format",
    "save_checkpoint": "checkpoints.format",
    "open_detector": "detect.registry",
    "box_source": "detect.sources",
    "EngineOptions": "pose.engine",
    "PoseEstimator": "pose.engine",
    "PoseTracker": "pose.tracking",
    "read_image": "media.images",
    "draw_poses": "media.render",
    "save_image": "media.render",
    "write_pose_results": "media.writers",
    "write_coco_dataset": "media.writers",
    "VideoOptions": "media.video",
    "Annotator": "annotate.images",
    "load_estimator": "annotate.images",
    "annotate_video": "annotate.video",
    "VideoSummary": "annotate.video",
}

__all__ = [
    "Annotator", "Box", "EngineOptions", "ImagePoses", "KeypointSet", "MipnetError", "Pose",
    "PoseEstimator", "PoseTracker", "VideoOptions", "VideoSummary", "__version__",
    "annotate_video", "box_source", "build_model", "draw_poses", "get_keypoint_set",
    "load_checkpoint", "load_estimator", "open_detector", "read_image", "save_checkpoint",
    "save_image", "write_coco_dataset", "write_pose_results",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time names load lazily
    from .annotate.images import Annotator, load_estimator
    from .annotate.video import VideoSummary, annotate_video
    from .checkpoints.format import load_checkpoint, save_checkpoint
    from .core.errors import MipnetError
    from .core.keypoints import KeypointSet, get_keypoint_set
    from .core.results import Box, ImagePoses, Pose
    from .detect.registry import open_detector
    from .detect.sources import box_source
    from .media.images import read_image
    from .media.render import draw_poses, save_image
    from .media.video import VideoOptions
    from .media.writers import write_coco_dataset, write_pose_results
    from .models.registry import build_model
    from .pose.engine import EngineOptions, PoseEstimator
    from .pose.tracking import PoseTracker


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
