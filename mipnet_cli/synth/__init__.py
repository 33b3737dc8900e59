"""Synthetic occluded crowds: COCO keypoint datasets and short videos with exact visibility.

    from mipnet_cli.synth import SynthConfig, generate_dataset
    stats = generate_dataset("out", SynthConfig(num_images=1000, overlap=0.7), workers=2)
"""

from .dataset import (
    ANNOTATION_FILE,
    IMAGE_DIR,
    SampleRenderer,
    SynthConfig,
    SynthStats,
    generate_dataset,
)
from .layouts import load_layouts
from .scene import Scene, render_scene
from .video import VideoConfig, generate_video, video_codec

__all__ = [
    "ANNOTATION_FILE", "IMAGE_DIR", "SampleRenderer", "Scene", "SynthConfig", "SynthStats",
    "VideoConfig", "generate_dataset", "generate_video", "load_layouts", "render_scene",
    "video_codec",
]
