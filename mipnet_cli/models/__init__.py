"""Pose networks: HRNet and ResNet SimpleBaseline, with Multi-Instance Modulation Blocks."""

from .config import ModelConfig, StageSpec, config_from_official, hrnet_stages
from .hrnet import PoseHRNet
from .mimb import MIMB, MIMBGroup
from .pose import PoseNet, instance_lambdas, soft_lambda
from .registry import (
    ARCHITECTURES,
    build_from_config,
    build_model,
    count_parameters,
    model_config,
)
from .resnet import PoseResNet

__all__ = [
    "ARCHITECTURES", "MIMB", "MIMBGroup", "ModelConfig", "PoseHRNet", "PoseNet", "PoseResNet",
    "StageSpec", "build_from_config", "config_from_official", "build_model", "count_parameters",
    "hrnet_stages",
    "instance_lambdas", "model_config", "soft_lambda",
]
