"""Pose networks: HRNet, ResNet SimpleBaseline and MoveNet, with Multi-Instance Modulation
Blocks; and the single-stage pose regression network."""

from .config import ModelConfig, StageSpec, config_from_official, hrnet_stages
from .hrnet import PoseHRNet
from .mimb import MIMB, MIMBGroup
from .movenet import MoveNet
from .pfs import PfsPoseNet
from .pose import Candidates, KeypointPoseNet, PoseNet, instance_lambdas, soft_lambda
from .registry import (
    ARCHITECTURES,
    build_from_config,
    build_model,
    check_config,
    count_parameters,
    model_config,
)
from .resnet import PoseResNet

__all__ = [
    "ARCHITECTURES", "Candidates", "KeypointPoseNet", "MIMB", "MIMBGroup", "ModelConfig", "MoveNet",
    "PoseHRNet", "PoseNet", "PoseResNet", "PfsPoseNet",
    "StageSpec", "build_from_config", "build_model", "check_config", "config_from_official",
    "count_parameters",
    "hrnet_stages",
    "instance_lambdas", "model_config", "soft_lambda",
]
