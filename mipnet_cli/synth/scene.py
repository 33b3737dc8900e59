"""Scenes: placing people (with a crowding knob), compositing back to front, and ground truth.

Visibility comes from what is really painted: a label image records which person (or a
foreground distractor) covers each pixel and a part image which body part. A keypoint is
  v=0 outside the image,
  v=1 when its pixel belongs to someone else or a distractor, or to a part of its own body in
      front of it (a far shoulder behind the chest, a face turned away),
  v=2 otherwise (its own pixel shows one of the parts it belongs to, or a part not in front).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .background import foreground_distractor
from .body import FACE_NORMALS, Figure, pose_figure, sample_pose, sample_proportions
from .draw import (
    KEYPOINT_PARTS,
    NUM_PARTS,
    TRUNK_PARTS,
    Appearance,
    draw_figure,
    keypoint_depths,
    sample_appearance,
)

DISTRACTOR = -1
# A face point shows while its surface normal faces the camera, or nearly (ears stick out).
FACE_MIN_COS = np.array([-0.15, -0.15, -0.15, -0.35, -0.35])


@dataclass
class Person:
    """A figure to paint, with its looks and an optional video track id."""

    figure: Figure
    look: Appearance
    track_id: int | None = None


@dataclass
class PersonTruth:
    """Ground truth for one painted person."""

    index: int  # paint order (label value index + 1)
    keypoints: np.ndarray  # (17, 3): x, y, v
    box: np.ndarray  # x0, y0, x1, y1 of the full (unoccluded) body, clipped to the image
    full_area: int
    visible_area: int
    segmentation: list[list[float]]  # polygons of the visible pixels
    track_id: int | None = None


@dataclass
class Scene:
    """A rendered image with its label maps and ground truth."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) int16: 0 background, -1 distractor, i + 1 person i
    parts: np.ndarray  # (H, W) uint8 part id of the person on top (0 elsewhere)
    people: list[PersonTruth]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes (N, 4) and (M, 4) in x0, y0, x1, y1."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def random_body(rng: np.random.Generator, pitch: float) -> Figure:
    """A random posture seen from a random direction, at 1 pixel per body height."""
    yaw = rng.uniform(0, 2 * np.pi)
    return pose_figure(sample_pose(rng), sample_proportions(rng), yaw, pitch,
                       float(np.radians(rng.normal(0, 3))))


def place_at(fig: Figure, scale: float, x0: float, y0: float) -> Figure:
    """Scale a unit figure to `scale` pixels per body height, extent box top-left at (x0, y0)."""
    f = fig.rescaled(scale / fig.scale)
    ext = f.extent()
    return f.moved(x0 - ext[0], y0 - ext[1])


def _box_at(size: np.ndarray, x0: float, y0: float) -> np.ndarray:
    return np.array([x0, y0, x0 + size[0], y0 + size[1]])


def group_sizes(rng: np.random.Generator, n: int, overlap: float) -> list[int]:
    """Split overlap * n (rounded at random) crowded people into groups of 2 or 3, never 1."""
    k = int(np.floor(overlap * n + rng.random()))
    if k == 1:
        k = 2 if n >= 2 and rng.random() < 0.5 else 0
    sizes = []
    while k > 0:
        g = 3 if k == 3 or (k >= 5 and rng.random() < 0.35) else 2
        sizes.append(g)
        k -= g
    return sizes


def random_crowd(rng: np.random.Generator, n: int, width: int, height: int, overlap: float,
                 scale_range: tuple[float, float]) -> list[Figure]:
    """Place n random people; about `overlap` of them get a box IoU above 0.5 with a neighbour.

    Crowded people come in groups of 2-3 placed on top of each other; the others are placed
    where they overlap nobody by more than IoU 0.35 when possible. Sorted back to front
    (lower feet are nearer).
    """
    pitch = float(np.radians(rng.uniform(-5, 20)))
    bodies = [random_body(rng, pitch) for _ in range(n)]
    sizes = [b.extent()[2:] - b.extent()[:2] for b in bodies]  # at 1 px per body height
    lo, hi = np.log(scale_range[0] * height), np.log(scale_range[1] * height)
    groups = group_sizes(rng, n, overlap)
    groups += [1] * (n - sum(groups))
    rng.shuffle(groups)
    placed: list[Figure] = []
    boxes: list[np.ndarray] = []

    def free_spot(size: np.ndarray) -> tuple[float, float]:
        best, best_iou = (0.0, 0.0), np.inf
        for _ in range(40):
            x0 = rng.uniform(-0.15 * size[0], max(width - 0.85 * size[0], -0.15 * size[0] + 1))
            y0 = rng.uniform(-0.1 * size[1], max(height - 0.9 * size[1], -0.1 * size[1] + 1))
            iou = box_iou(_box_at(size, x0, y0), np.array(boxes)).max() if boxes else 0.0
            if iou < best_iou:
                best, best_iou = (x0, y0), iou
            if iou < 0.35:
                break
        return best

    i = 0
    for g in groups:
        members: list[int] = []
        for _ in range(g):
            if not members:
                scale = float(np.exp(rng.uniform(lo, hi)))
                size = sizes[i] * scale
                x0, y0 = free_spot(size)
            else:
                partner = members[int(rng.integers(len(members)))]
                pb = boxes[partner]
                scale = placed[partner].scale * float(rng.uniform(0.88, 1.12))
                size = sizes[i] * scale
                pc = (pb[:2] + pb[2:]) / 2
                x0, y0 = pc - size / 2
                for _ in range(40):
                    dx = rng.uniform(-0.45, 0.45) * max(size[0], pb[2] - pb[0])
                    dy = rng.uniform(-0.12, 0.12) * max(size[1], pb[3] - pb[1])
                    cand = pc + np.array([dx, dy]) - size / 2
                    if box_iou(_box_at(size, *cand), pb)[0, 0] >= 0.55:
                        x0, y0 = cand
                        break
            placed.append(place_at(bodies[i], scale, x0, y0))
            boxes.append(_box_at(size, x0, y0))
            members.append(len(placed) - 1)
            i += 1
    return order_back_to_front(rng, placed)


def order_back_to_front(rng: np.random.Generator, figures: list[Figure]) -> list[Figure]:
    """Sort by the bottom of the body (feet lower in the image are nearer), with jitter."""
    keys = [f.extent()[3] + rng.normal(0, 0.03 * f.scale) for f in figures]
    return [figures[j] for j in np.argsort(keys, kind="stable")]


def dress(rng: np.random.Generator, figures: list[Figure],
          track_ids: list[int] | None = None) -> list[Person]:
    """Give each figure a random appearance."""
    ids = track_ids if track_ids is not None else [None] * len(figures)
    return [Person(f, sample_appearance(rng), t) for f, t in zip(figures, ids, strict=True)]


def _visibility(fig: Figure, index: int, label: np.ndarray, parts: np.ndarray,
                part_depth: np.ndarray) -> np.ndarray:
    """v in {0, 1, 2} for the 17 keypoints of the person painted as label value index + 1."""
    h, w = label.shape
    depth = keypoint_depths(fig)
    # A trunk hides a joint only well behind its middle: at 45 degrees the far shoulder still
    # shows at the chest's outline, as annotators see it; limbs are thin and hide sooner.
    tol = np.full(NUM_PARTS, 0.035 * fig.scale)
    tol[list(TRUNK_PARTS)] = 0.085 * fig.prop.girth * fig.scale
    face_front = (fig.head_axes @ FACE_NORMALS.T)[2] > FACE_MIN_COS
    vis = np.zeros(17, np.int64)
    for k in range(17):
        x, y = fig.points[k, :2]
        if not (0 <= x < w and 0 <= y < h):
            continue
        qy, qx = int(np.floor(y)), int(np.floor(x))
        if label[qy, qx] != index + 1:
            vis[k] = 1
            continue
        pid = int(parts[qy, qx])
        covered = pid not in KEYPOINT_PARTS[k] and part_depth[pid] > depth[k] + tol[pid]
        vis[k] = 1 if covered or (k < 5 and not face_front[k]) else 2
    return vis


def _polygons(mask: np.ndarray, x0: int, y0: int) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            pts = c.reshape(-1, 2).astype(np.float64) + [x0, y0]
            polys.append([float(v) for v in pts.ravel()])
    return polys


def render_scene(people: list[Person], base: np.ndarray,
                 distractors: list[tuple[np.ndarray, np.ndarray]] = ()) -> Scene:
    """Paint people back to front on a copy of `base`, then the foreground distractors
    (mask, colour patch), and compute every person's ground truth from the label maps."""
    height, width = base.shape[:2]
    image = base.copy()
    label = np.zeros((height, width), np.int16)
    parts = np.zeros((height, width), np.uint8)
    drawn = []
    for i, person in enumerate(people):
        d = draw_figure(person.figure, person.look, width, height)
        drawn.append(d)
        if d is None:
            continue
        h, w = d.parts.shape
        win = (slice(d.y0, d.y0 + h), slice(d.x0, d.x0 + w))
        m = d.parts > 0
        image[win][m] = d.colour[m]
        label[win][m] = i + 1
        parts[win][m] = d.parts[m]
    for mask, patch in distractors:
        image[mask] = patch[mask]
        label[mask] = DISTRACTOR
        parts[mask] = 0

    truths = []
    for i, (person, d) in enumerate(zip(people, drawn, strict=True)):
        if d is None:
            continue
        h, w = d.parts.shape
        full = d.parts > 0
        visible = label[d.y0:d.y0 + h, d.x0:d.x0 + w] == i + 1
        ys, xs = np.nonzero(full)
        box = np.array([xs.min() + d.x0, ys.min() + d.y0, xs.max() + d.x0 + 1,
                        ys.max() + d.y0 + 1], np.float64)
        vis = _visibility(person.figure, i, label, parts, d.part_depth)
        kps = np.column_stack([person.figure.points[:17, :2], vis])
        truths.append(PersonTruth(i, kps, box, int(full.sum()), int(visible.sum()),
                                  _polygons(visible, d.x0, d.y0), person.track_id))
    return Scene(image, label, parts, truths)


def distractors_for(rng: np.random.Generator, figures: list[Figure], height: int, width: int,
                    mean_count: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """A Poisson number of foreground shapes sized after the people in the scene."""
    if not figures:
        return []
    median_px = float(np.median([f.scale for f in figures]))
    return [foreground_distractor(rng, height, width, median_px)
            for _ in range(int(rng.poisson(mean_count)))]


def camera_effects(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Blur, sensor noise, exposure and white balance jitter."""
    img = image
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.1)))
    gain = (rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
    out = img.astype(np.float32) * gain
    noise = np.empty_like(out)
    cv2.setRNGSeed(int(rng.integers(2**31)))  # cv2's generator is much faster than numpy's
    cv2.randn(noise, float(rng.uniform(-20, 20)), float(rng.uniform(0, 6)))
    out += noise
    return np.clip(out, 0, 255, out=out).astype(np.uint8)
