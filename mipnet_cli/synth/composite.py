"""Crowds of real people: annotated people cut out of real photos with their segmentation masks
and pasted in overlapping, depth-ordered groups onto synthetic (or given real) backgrounds.

Keypoints keep their annotated positions (moved with the cut-out's scale, flip and offset);
a joint that a person pasted in front covers becomes "labelled, not visible" (v = 1), one that
leaves the image is dropped (v = 0): the ground truth is exact. People are split by source
person (a hash of file and annotation id), so the people of a validation set never appear in
training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..core.errors import MipnetError
from ..core.keypoints import COCO17
from ..data.dataset import load_coco_json, person_category_ids
from ..media.images import read_image
from .background import background
from .scene import PersonTruth, Scene, _polygons

SPLITS = ("train", "val")


@dataclass
class Cutout:
    """One annotated person: RGB pixels and alpha (the mask) of its box, keypoints in it."""

    rgb: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    keypoints: np.ndarray  # (17, 3): x, y in the crop, v as annotated
    source: str  # "file name#annotation id"


def person_split(source: str, val_fraction: float) -> str:
    """"train" or "val" for a source person, fixed by a hash of its identity."""
    h = int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "little") / 2**64
    return "val" if h < val_fraction else "train"


def _mask(ann: dict, height: int, width: int) -> np.ndarray | None:
    seg = ann.get("segmentation")
    if not seg:
        return None
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        if not polys:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def load_cutouts(ann_file: str | Path, images: str | Path, split: str = "train",
                 val_fraction: float = 0.2, min_keypoints: int = 6,
                 min_height: int = 64) -> list[Cutout]:
    """The people of a COCO-format keypoint file that can be cut out: not crowd regions, a
    segmentation mask, at least `min_keypoints` labelled joints and `min_height` pixels, in
    the person split `split` (of `val_fraction` validation people)."""
    if split not in SPLITS:
        raise MipnetError(f"person split must be one of {', '.join(SPLITS)}, got {split!r}")
    data = load_coco_json(ann_file)
    persons = person_category_ids(data)
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        if (ann.get("category_id", 1) in persons and not ann.get("iscrowd", 0)
                and ann.get("num_keypoints", 0) >= min_keypoints and ann.get("segmentation")
                and len(ann.get("keypoints", [])) == 3 * COCO17.num_joints
                and ann["bbox"][3] >= min_height):
            by_image.setdefault(ann["image_id"], []).append(ann)
    cutouts = []
    folder = Path(images)
    for img in data["images"]:
        anns = [a for a in by_image.get(img["id"], [])
                if person_split(f"{img['file_name']}#{a['id']}", val_fraction) == split]
        if not anns:
            continue
        rgb = read_image(folder / img["file_name"])
        h, w = rgb.shape[:2]
        for ann in anns:
            mask = _mask(ann, h, w)
            if mask is None or mask.sum() < 0.2 * ann["bbox"][2] * ann["bbox"][3]:
                continue
            ys, xs = np.nonzero(mask)
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
            kps[:, :2] -= [x0, y0]
            cutouts.append(Cutout(rgb[y0:y1, x0:x1].copy(),
                                  mask[y0:y1, x0:x1].astype(np.float32), kps,
                                  f"{img['file_name']}#{ann['id']}"))
    return cutouts


def body_fraction(keypoints: np.ndarray) -> float:
    """Roughly how much of a standing body's height a cut-out holds, from its lowest labelled
    joints (ankles: all of it; knees: 3/4; hips: 0.55; else the head and shoulders, 0.35), so
    that a close-up is not pasted as a giant."""
    labelled = keypoints[:, 2] > 0
    for joints, fraction in (((15, 16), 1.0), ((13, 14), 0.75), ((11, 12), 0.55)):
        if labelled[list(joints)].any():
            return fraction
    return 0.35


def _jitter(rng: np.random.Generator, c: Cutout, height: float) -> Cutout:
    """Scaled so that the whole body would be `height` pixels tall, maybe mirrored, colour-
    and blur-jittered, edges softened."""
    s = height * body_fraction(c.keypoints) / c.rgb.shape[0]
    size = (max(2, round(c.rgb.shape[1] * s)), max(2, round(c.rgb.shape[0] * s)))
    rgb = cv2.resize(c.rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize(c.alpha, size, interpolation=cv2.INTER_LINEAR)
    kps = c.keypoints.copy()
    kps[:, :2] = (kps[:, :2] + 0.5) * [size[0] / c.rgb.shape[1], size[1] / c.rgb.shape[0]] - 0.5
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1].copy(), alpha[:, ::-1].copy()
        kps[:, 0] = size[0] - 1 - kps[:, 0]
        kps = kps[COCO17.flip_index()]
    gain = rng.uniform(0.75, 1.25, 3) * rng.uniform(0.8, 1.2)
    rgb = np.clip(rgb.astype(np.float32) * gain + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        rgb = cv2.GaussianBlur(rgb, (0, 0), float(rng.uniform(0.5, 1.5)))
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.6, 0.004 * height))  # blended edges
    return Cutout(rgb, np.clip(alpha, 0, 1), kps, c.source)


def _groups(rng: np.random.Generator, count: int, overlap: float) -> list[bool]:
    """For each person, whether it joins the group of the person before it (groups of 2-3)."""
    joins, size = [], 1
    for k in range(count):
        join = k > 0 and size < 3 and rng.random() < overlap
        size = size + 1 if join else 1
        joins.append(join)
    return joins


def _layout(rng: np.random.Generator, sizes: list[tuple[int, int]], joins: list[bool],
            width: int, height: int) -> list[tuple[int, int]]:
    """Top-left corners: a group's members overlap its first one, feet near the same line."""
    corners: list[tuple[int, int]] = []
    anchor = (0, 0, 1, 1)
    for (w, h), join in zip(sizes, joins, strict=True):
        if join:
            ax, ay, aw, ah = anchor
            x = int(ax + rng.uniform(-0.35, 0.35) * max(aw, w))
            y = int(ay + ah - h + rng.uniform(-0.1, 0.1) * ah)
        else:
            x = int(rng.uniform(-0.2 * w, max(1.0, width - 0.8 * w)))
            y = int(rng.uniform(-0.1 * h, max(1.0, height - 0.9 * h)))
            anchor = (x, y, w, h)
        corners.append((x, y))
    return corners


def composite_scene(rng: np.random.Generator, cutouts: list[Cutout], width: int, height: int,
                    count: int, overlap: float, scale_range: tuple[float, float],
                    base: np.ndarray | None = None) -> Scene:
    """Paste `count` random cut-outs back to front (lower feet are nearer) onto `base` (default
    a synthetic background) and derive every person's visibility from what lies in front."""
    img = (background(rng, height, width) if base is None else base).astype(np.float32)
    label = np.zeros((height, width), np.int16)
    chosen = [cutouts[int(i)] for i in rng.choice(len(cutouts), count, replace=False)]
    joins = _groups(rng, count, overlap)
    heights: list[float] = []
    for join in joins:  # a group's people are of about the same size
        heights.append(heights[-1] * rng.uniform(0.85, 1.15) if join
                       else rng.uniform(*scale_range) * height)
    people = [_jitter(rng, c, h) for c, h in zip(chosen, heights, strict=True)]
    corners = _layout(rng, [(p.rgb.shape[1], p.rgb.shape[0]) for p in people], joins, width,
                      height)
    order = np.argsort([y + p.rgb.shape[0] for p, (_, y) in zip(people, corners, strict=True)],
                       kind="stable")
    placed = []
    for rank, i in enumerate(order):
        p, (x, y) = people[i], corners[i]
        h, w = p.alpha.shape
        # The part of the cut-out inside the image.
        ix0, iy0, ix1, iy1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        a = p.alpha[iy0 - y:iy1 - y, ix0 - x:ix1 - x, None]
        img[iy0:iy1, ix0:ix1] = img[iy0:iy1, ix0:ix1] * (1 - a) + \
            p.rgb[iy0 - y:iy1 - y, ix0 - x:ix1 - x] * a
        label[iy0:iy1, ix0:ix1][a[..., 0] > 0.5] = rank + 1
        kps = p.keypoints.copy()
        kps[:, :2] += [x, y]
        full = (p.alpha > 0.5)
        placed.append((rank + 1, kps, full, (x, y)))
    truths = []
    for index, kps, full, (x, y) in placed:
        visible = label == index
        area = int(visible.sum())
        if area == 0:
            continue
        k = kps.copy()
        inside = (k[:, 0] >= 0) & (k[:, 0] <= width - 1) & (k[:, 1] >= 0) & (k[:, 1] <= height - 1)
        k[~inside | (k[:, 2] == 0)] = 0
        px = np.clip(np.round(k[:, 0]).astype(int), 0, width - 1)
        py = np.clip(np.round(k[:, 1]).astype(int), 0, height - 1)
        covered = (label[py, px] > index) & (k[:, 2] > 0)
        k[covered, 2] = 1
        ys, xs = np.nonzero(full)
        box = np.array([max(xs.min() + x, 0), max(ys.min() + y, 0),
                        min(xs.max() + x + 1, width), min(ys.max() + y + 1, height)], float)
        truths.append(PersonTruth(index - 1, k, box, int(full.sum()), area,
                                  _polygons(visible, 0, 0)))
    return Scene(np.clip(img, 0, 255).astype(np.uint8), label,
                 np.zeros((height, width), np.uint8), truths)
