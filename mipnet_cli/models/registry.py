"""Named model configurations (a small timm-style registry) and the builder."""

from __future__ import annotations

from dataclasses import replace

from .config import ModelConfig, hrnet_stages
from .hrnet import PoseHRNet
from .movenet import MoveNet
from .movenet_multipose import MoveNetMultiPose
from .pfs import PfsPoseNet
from .pose import PoseNet
from .resnet import PoseResNet

ARCHITECTURES: dict[str, tuple[ModelConfig, str]] = {
    "hrnet_w48": (ModelConfig(stages=hrnet_stages(48), image_size=(384, 288)),
                  "HRNet-W48, the paper's strongest backbone"),
    "hrnet_w32": (ModelConfig(stages=hrnet_stages(32)), "HRNet-W32, the paper's main backbone"),
    "hrnet_w18": (ModelConfig(stages=hrnet_stages(18)), "HRNet-W18, lighter"),
    "hrnet_w16": (ModelConfig(stages=hrnet_stages(16)), "HRNet-W16, for CPU use"),
    "hrnet_w18_small": (ModelConfig(stages=hrnet_stages(18, modules=(1, 1, 1), blocks=2)),
                        "HRNet-W18 with one module per stage, for CPU use"),
    "hrnet_w16_lite": (ModelConfig(stages=hrnet_stages(16, modules=(1, 1, 1), blocks=2),
                                   stem_width=32, layer1_planes=32, layer1_blocks=2,
                                   image_size=(128, 96)),
                       "a light HRNet-W16 (slim stem) for CPU training: the synthetic demo"),
    "hrnet_w8_tiny": (ModelConfig(stages=hrnet_stages(8, modules=(1, 1, 1), blocks=1),
                                  image_size=(128, 96)),
                      "a tiny HRNet for tests"),
    "resnet152": (ModelConfig(arch="resnet", depth=152), "SimpleBaseline ResNet-152"),
    "resnet101": (ModelConfig(arch="resnet", depth=101), "SimpleBaseline ResNet-101"),
    "resnet50": (ModelConfig(arch="resnet", depth=50), "SimpleBaseline ResNet-50"),
    "resnet18": (ModelConfig(arch="resnet", depth=18), "SimpleBaseline ResNet-18, for CPU use"),
    "movenet_thunder": (ModelConfig(arch="movenet", width_mult=1.75, image_size=(256, 256),
                                    num_instances=1, se_modules=(True, True, False, False)),
                        "MoveNet SinglePose Thunder (MobileNetV2 x1.75 + FPN), 256x256 crops"),
    "movenet_lightning": (ModelConfig(arch="movenet", width_mult=1.0, image_size=(192, 192),
                                      num_instances=1, se_modules=(True, True, False, False)),
                          "MoveNet SinglePose Lightning (MobileNetV2 + FPN), 192x192 crops"),
    "movenet_multipose": (ModelConfig(arch="movenet_multipose", width_mult=1.5,
                                      image_size=(384, 384), num_instances=1,
                                      se_modules=(False,) * 4, max_people=20,
                                      score_thresh=0.05, kpt_thresh=0.3,
                                      feature_align=False, quality_score=False),
                          "MoveNet MultiPose Lightning (MobileNetV2 x1.5 + FPN, box heads): the "
                          "whole image in (any multiple of 32), every person out, no detector"),
    "pfs_yolox_nano": (ModelConfig(arch="pfs", image_size=(320, 320), num_instances=1,
                                   se_modules=(False,) * 4),
                       "single-stage pose regression with OKS-Filter and PSM (Miao et al.) on "
                       "YOLOX-Nano: the whole image in, every person out, no detector"),
}

POSE_SCORES = ("auto", "own", "centre", "psm", "psm_only")
BUILDERS = {"hrnet": PoseHRNet, "resnet": PoseResNet, "movenet": MoveNet,
            "movenet_multipose": MoveNetMultiPose, "pfs": PfsPoseNet}


def model_config(name: str, **overrides) -> ModelConfig:
    """The named configuration with fields replaced by `overrides` (None values ignored)."""
    try:
        base, _ = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "image_size" in overrides:
        overrides["image_size"] = tuple(overrides["image_size"])
    return replace(base, name=name, **overrides)


MAX_INPUT_SIDE = 2048  # pixels; a 2048x2048 crop already needs gigabytes of activations
MAX_INSTANCES = 8


def check_config(config: ModelConfig) -> None:
    """Refuse configurations no network can be built from (ValueError saying why): unknown
    arch, input sides that are not multiples of 32 in 32..2048 (the coarsest features are
    1/32 of the input), non-square input for square-input families, absurd counts."""
    if config.arch not in BUILDERS:
        raise ValueError(f"unknown arch {config.arch!r} (expected one of {', '.join(BUILDERS)})")
    size = config.image_size
    if (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
            or not all(32 <= v <= MAX_INPUT_SIDE and v % 32 == 0 for v in size)):
        raise ValueError(f"input size {'x'.join(map(str, size))}: each side must be a multiple "
                         f"of 32 from 32 to {MAX_INPUT_SIDE}")
    if BUILDERS[config.arch].square_input and size[0] != size[1]:
        raise ValueError(f"input size {size[0]}x{size[1]}: {config.arch} takes square crops")
    if not 1 <= config.num_instances <= MAX_INSTANCES:
        raise ValueError(f"{config.num_instances} instances: expected 1 to {MAX_INSTANCES}")
    if not 1 <= config.num_joints <= 200:
        raise ValueError(f"{config.num_joints} joints: expected 1 to 200")
    if config.pose_score not in POSE_SCORES:
        raise ValueError(f"pose score {config.pose_score!r}: expected one of "
                         f"{', '.join(POSE_SCORES)}")


def build_from_config(config: ModelConfig) -> PoseNet:
    """Instantiate the network a configuration describes (checked by `check_config`)."""
    check_config(config)
    return BUILDERS[config.arch](config)


def build_model(name: str, **overrides) -> PoseNet:
    """Build a named architecture, e.g. `build_model("hrnet_w32", num_instances=2)`."""
    return build_from_config(model_config(name, **overrides))


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
