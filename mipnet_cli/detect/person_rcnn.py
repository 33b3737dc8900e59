"""Small person detectors, registered by name in torchvision's model registry.

`torchvision.models.get_model_builder(name)` finds them once this module is imported, so
`PersonDetector(name, weights_path=...)` builds them like any torchvision detector. They have
no downloadable weights: they are trained with `mipnet train-detector`.
"""

from __future__ import annotations

from typing import Any

import torchvision
from torch import nn
from torchvision.models._api import register_model
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import Conv2dNormActivation

SMALL_PERSON_DETECTOR = "fasterrcnn_mobilenet_v3_small_person"
PERSON_DETECTORS = (SMALL_PERSON_DETECTOR,)

# Anchor side sqrt(w * h) in pixels of the resized image, and height / width: people stand.
PERSON_ANCHOR_SIZES = (36, 60, 100, 168)
PERSON_ASPECT_RATIOS = (1.3, 2.0, 3.0)


@register_model(name=SMALL_PERSON_DETECTOR)
def fasterrcnn_mobilenet_v3_small_person(
    *,
    weights: None = None,
    progress: bool = True,
    num_classes: int = 2,
    weights_backbone: None = None,
    channels: int = 128,
    representation: int = 256,
    min_size: int = 256,
    max_size: int = 512,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN on a MobileNetV3-Small trunk (dilated last stage: stride 16), one feature map.

    About 2.8M parameters with the defaults. Images are resized so their shorter side is
    `min_size` (the longer at most `max_size`). Anchors are upright (height/width 1.3 to 3).
    Label 1 is "person" with the default two classes. `kwargs` go to `FasterRCNN` (RPN and box
    head settings). Randomly initialised: this builder has no pretrained weights.
    """
    del progress  # nothing to download
    if weights is not None or weights_backbone is not None:
        raise ValueError(f"{SMALL_PERSON_DETECTOR} has no pretrained weights; train it with "
                         "`mipnet train-detector` and load the file as weights_path")
    trunk = torchvision.models.mobilenet_v3_small(weights=None, dilated=True).features
    backbone = nn.Sequential(
        trunk, Conv2dNormActivation(trunk[-1].out_channels, channels, kernel_size=1))
    backbone.out_channels = channels
    anchors = AnchorGenerator(
        sizes=(PERSON_ANCHOR_SIZES,), aspect_ratios=(PERSON_ASPECT_RATIOS,))
    pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=1)
    settings: dict[str, Any] = {
        "rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 500,
        "rpn_pre_nms_top_n_test": 500, "rpn_post_nms_top_n_test": 300,
        "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 64,
    }
    settings.update(kwargs)
    return FasterRCNN(
        backbone, num_classes=None, min_size=min_size, max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        box_roi_pool=pool,
        box_head=TwoMLPHead(channels * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes),
        **settings,
    )
