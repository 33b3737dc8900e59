"""Whole images with every person's keypoints, for single-stage training.

Each sample is one image letterboxed to the square network input (the inference crop of a
whole-image family), with scale, shift and flip jitter in training; every annotated person's
joints (K, 3: x, y, visibility) in input pixels, their box and area, padded to `MAX_PEOPLE`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.geometry import PIXEL_STD, affine_transform_points, get_affine_transform
from ..core.keypoints import KeypointSet
from ..media.images import read_image
from .augment import color_jitter, flip_joints
from .dataset import infer_keypoint_set, load_coco_json, person_category_ids

MAX_PEOPLE = 32


@dataclass(frozen=True)
class SceneAugment:
    """Training jitter of the letterbox: scale × U(1 - scale, 1 + scale), and with probability
    `zoom_prob` a zoom out × U(1, zoom_out) (small people for the fine levels), centre shift
    up to `shift` of the side, horizontal flips, colour jitter strength."""

    scale: float = 0.25
    zoom_out: float = 1.0
    zoom_prob: float = 0.0
    shift: float = 0.1
    flip_prob: float = 0.5
    color_jitter: float = 0.2


class SceneDataset(Dataset):
    """(image uint8 (3, S, S) RGB, people (MAX_PEOPLE, K, 3), boxes (MAX_PEOPLE, 4) x0 y0 x1
    y1, areas (MAX_PEOPLE,), count) per image of a COCO keypoint file."""

    def __init__(self, ann: str | os.PathLike, images: str | os.PathLike, size: int,
                 keypoint_set: KeypointSet | None = None, train: bool = True,
                 augment: SceneAugment | None = None, seed: int = 0) -> None:
        data = load_coco_json(ann)
        self.images_dir = Path(images)
        self.keypoint_set = keypoint_set or infer_keypoint_set(data, ann)
        self.size = size
        self.train = train
        self.augment = augment or SceneAugment()
        self.seed = seed
        self.epoch = 0
        persons = person_category_ids(data)
        k = self.keypoint_set.num_joints
        people: dict[int, list[tuple[np.ndarray, np.ndarray, float]]] = {}
        for a in data["annotations"]:
            if a.get("iscrowd") or a.get("category_id", 1) not in persons:
                continue
            kps = np.asarray(a.get("keypoints") or [0] * 3 * k, np.float32).reshape(k, 3)
            x, y, w, h = a.get("bbox") or (0, 0, 0, 0)
            people.setdefault(a["image_id"], []).append(
                (kps, np.array([x, y, x + w, y + h], np.float32), float(a.get("area", w * h))))
        self.entries = [(im["file_name"], people.get(im["id"], [])) for im in data["images"]]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        name, people = self.entries[index]
        rgb = read_image(self.images_dir / name)
        h, w = rgb.shape[:2]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        center = np.array([w / 2, h / 2], np.float32)
        side = max(w, h)
        flipped = False
        if self.train:
            a = self.augment
            side *= rng.uniform(1 - a.scale, 1 + a.scale)
            if rng.random() < a.zoom_prob:
                side *= rng.uniform(1.0, a.zoom_out)
            center += rng.uniform(-a.shift, a.shift, 2).astype(np.float32) * max(w, h)
            flipped = rng.random() < a.flip_prob
            if a.color_jitter:
                rgb = color_jitter(rgb, a.color_jitter, rng)
        k = self.keypoint_set.num_joints
        joints = np.zeros((MAX_PEOPLE, k, 3), np.float32)
        boxes = np.zeros((MAX_PEOPLE, 4), np.float32)
        areas = np.zeros(MAX_PEOPLE, np.float32)
        n = min(len(people), MAX_PEOPLE)
        if n:
            kps = np.stack([p[0] for p in people[:n]])
            corners = np.stack([p[1] for p in people[:n]]).reshape(n, 2, 2)
            vis = (kps[..., 2] > 0).astype(np.float32)
            xy = kps[..., :2]
        else:
            xy, vis, corners = np.zeros((0, k, 2)), np.zeros((0, k)), np.zeros((0, 2, 2))
        if flipped:
            rgb = rgb[:, ::-1]
            center[0] = w - 1 - center[0]
            xy, vis = flip_joints(xy, vis, w, self.keypoint_set)
            corners = corners[:, ::-1].copy()
            corners[..., 0] = w - 1 - corners[..., 0]
        scale = np.array([side, side], np.float32) / PIXEL_STD
        trans = get_affine_transform(center, scale, 0.0, (self.size, self.size))
        image = cv2.warpAffine(np.ascontiguousarray(rgb), trans, (self.size, self.size),
                               flags=cv2.INTER_LINEAR)
        if n:
            out = affine_transform_points(xy.reshape(-1, 2), trans).reshape(n, k, 2)
            inside = (out >= 0).all(-1) & (out <= self.size - 1).all(-1)
            joints[:n, :, :2] = out
            joints[:n, :, 2] = vis * inside
            b = affine_transform_points(corners.reshape(-1, 2), trans).reshape(n, 4)
            boxes[:n] = b
            areas[:n] = np.array([p[2] for p in people[:n]]) * (self.size / side) ** 2
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return (tensor, torch.from_numpy(joints), torch.from_numpy(boxes),
                torch.from_numpy(areas), n)
