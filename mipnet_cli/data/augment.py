"""HRNet's training augmentation, applied with one affine to every instance of a sample.

Half-body crops, scale and rotation jitter, horizontal flips (with the keypoint set's flip
pairs), optional colour jitter, then an affine crop. Joints are (N, K, 2) arrays in image
pixels with visibilities (N, K) in {0, 1}; sizes are (height, width).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..core.geometry import PIXEL_STD, affine_transform_points, get_affine_transform
from ..core.keypoints import KeypointSet


@dataclass(frozen=True)
class AugmentConfig:
    """HRNet defaults (`DATASET.*` in its COCO configs)."""

    scale_factor: float = 0.35  # scale × clip(1 + N(0, sf), 1 - sf, 1 + sf)
    rotation_factor: float = 45.0  # degrees: clip(N(0, rf), -2 rf, 2 rf) ...
    rotation_prob: float = 0.6  # ... with this probability, else 0
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8  # half-body needs more visible joints than this
    color_jitter: float = 0.0  # brightness/contrast/saturation strength; 0 disables


@dataclass
class CropParams:
    """Where a sample's crop comes from: centre, scale (in 200 px units), rotation, flip."""

    center: np.ndarray  # (2,) float32
    scale: np.ndarray  # (2,) float32
    rotation: float = 0.0
    flipped: bool = False


def half_body_center_scale(
    joints: np.ndarray,
    vis: np.ndarray,
    keypoint_set: KeypointSet,
    aspect_ratio: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """HRNet's half-body box: the upper or the lower body's visible joints, padded × 1.5.

    The upper body is chosen when N(0,1) < 0.5 (HRNet's rule, p ≈ 0.69) and it has more than
    2 visible joints; otherwise the lower body if it has more than 2, else the upper body.
    Returns None when the chosen half has fewer than 2 visible joints.
    """
    upper_ids = set(keypoint_set.upper_body)
    visible = np.flatnonzero(vis > 0)
    upper = [j for j in visible if j in upper_ids]
    lower = [j for j in visible if j not in upper_ids]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    pts = np.asarray(joints[chosen, :2], dtype=np.float32)
    center = pts.mean(axis=0)
    w, h = pts.max(axis=0) - pts.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * 1.5
    return center, scale


def flip_joints(
    joints: np.ndarray, vis: np.ndarray, image_width: int, keypoint_set: KeypointSet
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror (N, K, 2) joints in an image `image_width` wide and swap left/right joints.

    x becomes width - x - 1, as HRNet's `fliplr_joints`; unlabelled joints become (0, 0).
    """
    perm = keypoint_set.flip_index()
    out = joints[:, perm].copy()
    out_vis = vis[:, perm].copy()
    out[..., 0] = image_width - out[..., 0] - 1
    out *= out_vis[..., None]
    return out, out_vis


def sample_crop(
    center: np.ndarray,
    scale: np.ndarray,
    joints0: np.ndarray,
    vis0: np.ndarray,
    keypoint_set: KeypointSet,
    image_width: int,
    aspect_ratio: float,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> CropParams:
    """Draw one training crop around the primary person (joints0, vis0: (K, 2), (K,))."""
    c = np.array(center, dtype=np.float32)
    s = np.array(scale, dtype=np.float32)
    if vis0.sum() > config.half_body_min_joints and rng.random() < config.half_body_prob:
        half = half_body_center_scale(joints0, vis0, keypoint_set, aspect_ratio, rng)
        if half is not None:
            c, s = half
    sf = config.scale_factor
    s = s * np.float32(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
    rf = config.rotation_factor
    rot = 0.0
    if rng.random() <= config.rotation_prob:
        rot = float(np.clip(rng.standard_normal() * rf, -rf * 2, rf * 2))
    flipped = bool(rng.random() <= config.flip_prob)
    if flipped:
        c[0] = image_width - c[0] - 1
    return CropParams(center=c, scale=s, rotation=rot, flipped=flipped)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength].

    `image` is RGB uint8 (H, W, 3); the result is RGB uint8.
    """
    img = image.astype(np.float32)
    lo, hi = 1.0 - strength, 1.0 + strength
    img *= rng.uniform(lo, hi)  # brightness
    gray = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = (img - gray.mean()) * rng.uniform(lo, hi) + gray.mean()  # contrast
    gray = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = (img - gray[..., None]) * rng.uniform(lo, hi) + gray[..., None]  # saturation
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def apply_crop(
    image: np.ndarray,
    joints: np.ndarray,
    vis: np.ndarray,
    crop: CropParams,
    keypoint_set: KeypointSet,
    image_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flip (if asked) and warp the image and every instance's joints with one affine.

    Returns the (H, W, 3) crop, the joints (N, K, 2) and visibilities (N, K) in crop pixels
    (see `crop_joints`), and the 2x3 affine from the (flipped) image to the crop.
    """
    if crop.flipped:
        image = image[:, ::-1]
        joints, vis = flip_joints(joints, vis, image.shape[1], keypoint_set)
    trans = get_affine_transform(
        crop.center, crop.scale, crop.rotation, (image_size[1], image_size[0])
    )
    out = cv2.warpAffine(
        np.ascontiguousarray(image), trans, (int(image_size[1]), int(image_size[0])),
        flags=cv2.INTER_LINEAR,
    )
    joints, vis = crop_joints(joints, vis, trans, image_size)
    return out, joints, vis, trans


def crop_joints(
    joints: np.ndarray, vis: np.ndarray, trans: np.ndarray, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Map (N, K, 2) joints into the crop; joints that land outside it drop out (0, 0, vis 0).

    Outside means x < 0, y < 0, x > W or y > H (MIPNet's `get_transformed_joints`).
    """
    n, k = joints.shape[:2]
    out = affine_transform_points(joints.reshape(-1, 2), trans).reshape(n, k, 2)
    h, w = image_size
    outside = (out[..., 0] > w) | (out[..., 1] > h) | (out[..., 0] < 0) | (out[..., 1] < 0)
    out[outside] = 0.0
    out_vis = np.where(outside, 0.0, vis)
    return out, out_vis
