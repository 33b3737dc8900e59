"""mipnet: multi-person 2D pose annotation with Multi-Instance Pose Networks (MIPNet)."""

__version__ = "0.1.0"
