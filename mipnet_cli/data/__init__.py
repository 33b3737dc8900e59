"""Training and evaluation data: COCO-format datasets, multi-instance targets, augmentation."""

from .augment import AugmentConfig
from .dataset import KeypointDataset, PersonRecord, load_coco_json
from .targets import generate_target, generate_targets

__all__ = [
    "AugmentConfig",
    "KeypointDataset",
    "PersonRecord",
    "generate_target",
    "generate_targets",
    "load_coco_json",
]
