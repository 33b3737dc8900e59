"""Skeleton overlays on photos and atomic image saving."""

from __future__ import annotations

import colorsys
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.errors import MipnetError
from ..core.files import atomic_path
from ..core.keypoints import KeypointSet
from ..core.results import Box, Pose

# Bright, mutually distinct colours (RGB) that stay readable over a dark outline on busy photos.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64), (64, 220, 90), (255, 210, 40), (60, 150, 255), (255, 140, 30),
    (190, 90, 255), (50, 230, 230), (255, 80, 210), (170, 240, 60), (255, 170, 190),
    (0, 190, 160), (200, 180, 255),
)
OUTLINE = (10, 10, 10)
BOX_COLOR = (235, 235, 235)
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_SCALE = 1 << _SHIFT


def color_for(index: int) -> tuple[int, int, int]:
    """A distinct RGB colour for person `index` (the palette, then golden-ratio hues)."""
    if 0 <= index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans Bold (shipped with matplotlib), which has the λ glyph."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    return ImageFont.truetype(str(path), size)


def _auto_sizes(height: int, width: int) -> tuple[int, int]:
    """Default (thickness, radius) for an image: 2 and 4 px at 640x480, 5 and 9 px at 1080p."""
    thickness = max(1, round(np.sqrt(height * width) / 300))
    return thickness, max(2, round(1.6 * thickness + 1))


def _fixed(point: np.ndarray) -> tuple[int, int]:
    return int(round(point[0] * _SCALE)), int(round(point[1] * _SCALE))


def _segment(img: np.ndarray, a: np.ndarray, b: np.ndarray, color, thickness: int,
             dashed: bool) -> None:
    """An anti-aliased line from a to b, optionally dashed (dash 3t + 2, gap 2t + 2 pixels)."""
    if not dashed:
        cv2.line(img, _fixed(a), _fixed(b), color, thickness, cv2.LINE_AA, _SHIFT)
        return
    length = float(np.hypot(*(b - a)))
    dash, gap = 3 * thickness + 2, 2 * thickness + 2
    start = 0.0
    while start < length:
        end = min(start + dash, length)
        p, q = a + (b - a) * (start / length), a + (b - a) * (end / length)
        cv2.line(img, _fixed(p), _fixed(q), color, thickness, cv2.LINE_AA, _SHIFT)
        start = end + gap


def _joint(img: np.ndarray, p: np.ndarray, color, radius: int, hollow: bool, rim: bool) -> None:
    """The dark rim (`rim`) or the coloured part of a joint: a dot, or (hollow) a ring.

    Rims of all joints go down before any colour, so close joints (a face) merge cleanly.
    """
    centre = _fixed(p)
    if hollow:  # one pixel wider than a dot, so the open centre shows at small sizes
        ring = max(1, radius // 3)
        cv2.circle(img, centre, (radius + 1) * _SCALE, OUTLINE if rim else color,
                   ring + 2 if rim else ring, cv2.LINE_AA, _SHIFT)
    else:
        cv2.circle(img, centre, (radius + int(rim)) * _SCALE, OUTLINE if rim else color, -1,
                   cv2.LINE_AA, _SHIFT)


def draw_poses(
    image_rgb: np.ndarray,
    poses: Sequence[Pose],
    keypoint_set: KeypointSet,
    boxes: Sequence[Box] | None = None,
    kpt_thresh: float = 0.3,
    radius: int | None = None,
    thickness: int | None = None,
    show_boxes: bool = False,
    show_scores: bool = False,
) -> np.ndarray:
    """Draw skeletons on a copy of an RGB uint8 image.

    Each person gets its own colour (by `track_id` when set, else by position in `poses`); limbs
    and joints have a dark outline so they read on any background. Secondary instances
    (`pose.instance > 0`, the other people MIPNet finds in a box) have dashed limbs, hollow
    joints and a "λ<instance>" tag above their topmost joint. Keypoints with confidence below
    `kpt_thresh` (and limbs touching them) are not drawn. `radius` and `thickness` default to
    sizes scaled to the image, reduced for small people. With `show_boxes`, `boxes` are drawn
    with their id and score; `show_scores` adds each pose's score to its tag and writes every
    drawn keypoint's confidence beside it.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image_rgb.dtype} "
                         f"{image_rgb.shape}")
    out = np.ascontiguousarray(image_rgb.copy())
    height, width = out.shape[:2]
    auto_t, auto_r = _auto_sizes(height, width)
    texts: list[tuple[tuple[float, float], str, tuple[int, int, int], int]] = []
    small = max(10, round(3 * auto_t + 7))

    if show_boxes and boxes:
        box_t = max(1, auto_t - 1)
        for box in boxes:
            x0, y0, x1, y1 = (float(v) for v in box.xyxy)
            corners = [_fixed(np.array(p)) for p in ((x0, y0), (x1, y1))]
            cv2.rectangle(out, *corners, OUTLINE, box_t + 2, cv2.LINE_AA, _SHIFT)
            cv2.rectangle(out, *corners, BOX_COLOR, box_t, cv2.LINE_AA, _SHIFT)
            label_y = y0 - small - 3 if y0 - small - 3 >= 0 else y0 + 2  # above, else inside
            texts.append(((x0 + 1, label_y), f"#{box.id} {box.score:.2f}", BOX_COLOR, small))

    limit = 8.0 * max(height, width)  # keeps wild coordinates inside OpenCV's integer range
    for index, pose in enumerate(poses):
        kpts = np.asarray(pose.keypoints, dtype=np.float64)
        if kpts.shape != (keypoint_set.num_joints, 3):
            raise ValueError(f"pose {index}: keypoints of shape {kpts.shape} do not fit the "
                             f"{keypoint_set.num_joints}-joint {keypoint_set.name} skeleton")
        xy = np.clip(kpts[:, :2], -limit, limit)
        shown = (kpts[:, 2] >= kpt_thresh) & np.isfinite(kpts).all(axis=1)
        if not shown.any():
            continue
        color = color_for(pose.track_id if pose.track_id is not None else index)
        secondary = pose.instance > 0
        extent = float(np.ptp(xy[shown], axis=0).max())
        t = thickness if thickness is not None else max(1, min(auto_t, round(extent / 80)))
        r = radius if radius is not None else max(
            1, min(auto_r, round(1.6 * t + 1), round(extent / 25)))  # tiny people: small dots
        limbs = [(a, b) for a, b in keypoint_set.skeleton if shown[a] and shown[b]]
        for a, b in limbs:
            _segment(out, xy[a], xy[b], OUTLINE, t + 2, secondary)
            _segment(out, xy[a], xy[b], color, t, secondary)
        for j in np.flatnonzero(shown):
            _joint(out, xy[j], color, r, secondary, rim=True)
        for j in np.flatnonzero(shown):
            _joint(out, xy[j], color, r, secondary, rim=False)
            if show_scores:
                texts.append(((xy[j, 0] + r + 1, xy[j, 1] - r), f"{kpts[j, 2]:.2f}",
                              (255, 255, 255), max(9, small - 3)))
        tag = " ".join(
            ([f"λ{pose.instance}"] if secondary else [])
            + ([f"{pose.score:.2f}"] if show_scores else [])
        )
        if tag:
            top = int(np.flatnonzero(shown)[np.argmin(xy[shown, 1])])
            size = small + 2
            texts.append(((xy[top, 0] - size / 2, xy[top, 1] - r - 4 - size), tag, color, size))

    if texts:
        canvas = Image.fromarray(out)
        draw = ImageDraw.Draw(canvas)
        for (x, y), text, fill, size in texts:
            draw.text((x, y), text, fill=fill, font=_font(size),
                      stroke_width=max(1, size // 7), stroke_fill=OUTLINE)
        out = np.array(canvas)
    return out


def save_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an RGB uint8 image atomically; the format follows the extension (.jpg, .png, ...).

    `quality` applies to JPEG and WebP.
    """
    p = Path(path)
    if not cv2.haveImageWriter(str(p)):
        raise MipnetError(f"{p}: cannot write images with extension {p.suffix or '(none)'!r}; "
                          "use .jpg, .png, .bmp, .webp or .tif")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
    ext = p.suffix.lower()
    params = ([cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg", ".jpe")
              else [cv2.IMWRITE_WEBP_QUALITY, quality] if ext == ".webp" else [])
    with atomic_path(p) as tmp:
        try:
            ok = cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        except cv2.error as exc:
            raise MipnetError(f"{p}: cannot write image ({str(exc).strip().splitlines()[-1]})"
                              ) from None
        if not ok:
            raise MipnetError(f"{p}: cannot write image (OpenCV refused the file)")
