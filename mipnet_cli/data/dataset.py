"""COCO-format person-keypoint datasets with multi-instance targets (MIPNet training and eval).

One sample per person box B0. Instance 0 is B0's own person; instances 1..N-1 are the other
annotated people of the image, nearest box centre first. All instances share B0's crop; after
augmentation an instance with 3 or fewer joints inside the crop learns B0's pose instead (the
paper: "instance i learns the i-th person when it has more than 3 joints inside the crop").
As in MIPNet's `JointsLambdaDataset`, joints outside the crop are dropped for every instance,
B0 included (HRNet would still paste the part of their Gaussian that reaches the heatmap).

Sizes are (height, width), e.g. image_size=(256, 192), heatmap_size=(64, 48).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.errors import MipnetError
from ..core.files import finite, read_json
from ..core.geometry import IMAGENET_MEAN, IMAGENET_STD, box_to_center_scale
from ..core.keypoints import KeypointSet, keypoint_set_for
from .augment import AugmentConfig, CropParams, apply_crop, color_jitter, sample_crop
from .targets import generate_targets

MIN_JOINTS_IN_CROP = 3  # an instance needs more joints than this inside the crop
MAX_CONTEXT = 12  # other people of the image whose joints a sample carries


def load_coco_json(path: str | os.PathLike) -> dict:
    """Read a COCO-format annotation file; `MipnetError` for a missing or malformed file."""
    p = Path(path)
    data = read_json(p, "annotation file")
    lists = isinstance(data, dict) and all(
        isinstance(data.get(key), list) for key in ("images", "annotations")
    )
    if not lists:
        raise MipnetError(f"{p}: not a COCO annotation file (needs 'images' and 'annotations')")
    for i, ann in enumerate(data["annotations"]):
        for key in ("bbox", "keypoints"):
            values = ann.get(key) if isinstance(ann, dict) else None
            if values is not None and not (isinstance(values, list) and finite(values)):
                raise MipnetError(f"{p}: annotations[{i}] (id {ann.get('id')}) has a {key} "
                                  "that is not a list of finite numbers")
    return data


def person_category_ids(dataset: dict) -> set[int]:
    """Ids of the 'person' categories (all categories if none is named so; {1} if none given)."""
    cats = dataset.get("categories") or []
    named = {c["id"] for c in cats if c.get("name") == "person"}
    return named or {c["id"] for c in cats} or {1}


def infer_keypoint_set(dataset: dict, source: str | os.PathLike = "annotations") -> KeypointSet:
    """The keypoint set matching the file's joint count (17 -> COCO, 14 -> CrowdPose)."""
    counts = [len(c["keypoints"]) for c in dataset.get("categories") or [] if c.get("keypoints")]
    if not counts:
        counts = [len(a["keypoints"]) // 3 for a in dataset["annotations"] if a.get("keypoints")]
    if not counts:
        raise MipnetError(f"{source}: no keypoint annotations to tell the keypoint set from")
    try:
        return keypoint_set_for(counts[0])
    except ValueError as exc:
        raise MipnetError(f"{source}: {exc}") from None


def clean_box(bbox: list[float], width: int, height: int) -> np.ndarray | None:
    """HRNet's box clean-up: clip to the image; None when nothing is left."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1))
    if x2 < x1 or y2 < y1:
        return None
    return np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float64)


@dataclass
class PersonRecord:
    """One person box and its keypoints (image pixels)."""

    image_id: int
    image_file: str
    ann_id: int  # -1 for a detection box
    center: np.ndarray  # (2,) float32
    scale: np.ndarray  # (2,) float32, in 200 px units, padded to the model aspect × 1.25
    joints: np.ndarray  # (K, 2) float64
    vis: np.ndarray  # (K,) float64, 0 or 1
    score: float = 1.0
    neighbours: tuple[int, ...] = field(default_factory=tuple)  # record indices, nearest first
    others: tuple[int, ...] = field(default_factory=tuple)  # every other person of the image


class KeypointDataset(Dataset):
    """Top-down multi-instance samples from a COCO-format person-keypoint file.

    Each item is `(image, targets, target_weights, meta)`:
    - image: (3, H, W) float32, RGB, /255, ImageNet-normalised;
    - targets: (N, K, h, w) float32 Gaussian heatmaps, one per instance;
    - target_weights: (N, K, 1) float32;
    - meta: dict of index, image_id, image_file, ann_ids (N,), fallback (N,) bool (instance
      took B0's pose), joints (N, K, 2) and joints_vis (N, K) in crop pixels, center, scale,
      rotation, flipped, score — all collatable by the default DataLoader collate. center and
      scale describe the crop in the (possibly flipped) image; in evaluation they are B0's.

    Training (`train=True`) uses GT boxes with HRNet's augmentation. Evaluation uses no
    augmentation and GT boxes, or the boxes of a detection file (`boxes=`, HRNet's format: a
    list of {image_id, category_id, bbox [x, y, w, h], score}) with all-zero targets.
    Augmentation randomness comes from torch's generator, so DataLoader workers and seeds
    (`torch.manual_seed`) behave as for any torch dataset.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        keypoint_set: KeypointSet | None = None,
        image_size: tuple[int, int] = (256, 192),
        heatmap_size: tuple[int, int] = (64, 48),
        sigma: float = 2,
        num_instances: int = 2,
        train: bool = True,
        boxes: str | os.PathLike | None = None,
        box_score_threshold: float = 0.0,
        augment: AugmentConfig | None = None,
        box_padding: float = 1.25,
    ) -> None:
        if num_instances < 1:
            raise ValueError("num_instances must be at least 1")
        if train and boxes is not None:
            raise ValueError("training uses the annotated boxes; `boxes` is for evaluation")
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = sigma
        self.num_instances = num_instances
        self.train = train
        self.augment = augment or AugmentConfig()
        self.aspect_ratio = self.image_size[1] / self.image_size[0]
        self.box_padding = box_padding

        dataset = load_coco_json(self.ann_file)
        self.keypoint_set = keypoint_set or infer_keypoint_set(dataset, self.ann_file)
        self.images = {}
        for img in dataset["images"]:
            if not isinstance(img, dict) or any(
                key not in img for key in ("id", "file_name", "width", "height")
            ):
                raise MipnetError(
                    f"{self.ann_file}: image entries need id, file_name, width and height"
                )
            self.images[img["id"]] = img
        if boxes is None:
            self.records = self._gt_records(dataset)
        else:
            self.records = self._detection_records(Path(boxes), box_score_threshold)
        self._check_images()

    # ---------------------------------------------------------------- loading
    def _gt_records(self, dataset: dict) -> list[PersonRecord]:
        person = person_category_ids(dataset)
        k = self.keypoint_set.num_joints
        by_image: dict[int, list[dict]] = {img_id: [] for img_id in self.images}
        for ann in dataset["annotations"]:
            if ann.get("category_id") not in person or ann.get("iscrowd", 0):
                continue
            kps = ann.get("keypoints") or []
            if not kps or max(kps) == 0:
                continue
            if len(kps) != 3 * k:
                raise MipnetError(
                    f"{self.ann_file}: annotation {ann.get('id')} has {len(kps)} keypoint values, "
                    f"expected {3 * k} ({self.keypoint_set.name})"
                )
            if ann["image_id"] not in by_image:
                raise MipnetError(
                    f"{self.ann_file}: annotation {ann.get('id')} refers to unknown image "
                    f"{ann['image_id']}"
                )
            by_image[ann["image_id"]].append(ann)

        records: list[PersonRecord] = []
        for img_id, anns in by_image.items():
            img = self.images[img_id]
            first = len(records)
            for ann in anns:
                if ann.get("area") is not None and not ann["area"] > 0:
                    continue
                box = clean_box(ann["bbox"], img["width"], img["height"])
                if box is None:
                    continue
                center, scale = box_to_center_scale(box, self.aspect_ratio, self.box_padding)
                kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(k, 3)
                records.append(PersonRecord(
                    image_id=img_id, image_file=img["file_name"], ann_id=int(ann["id"]),
                    center=center, scale=scale, joints=kps[:, :2].copy(),
                    vis=np.minimum(kps[:, 2], 1.0),
                ))
            self._link_neighbours(records, first)
        return records

    def _link_neighbours(self, records: list[PersonRecord], first: int) -> None:
        """For each person of one image, the other people by box-centre distance (stable)."""
        people = records[first:]
        if len(people) < 2:
            return
        centers = np.stack([r.center for r in people])  # float32, as the official distances
        d = ((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
        for i, rec in enumerate(people):
            order = [j for j in np.argsort(d[i], kind="stable") if j != i]
            rec.others = tuple(first + int(j) for j in order[:MAX_CONTEXT])
            if self.num_instances > 1:
                rec.neighbours = tuple(first + int(j) for j in order[: self.num_instances - 1])

    def _detection_records(self, path: Path, threshold: float) -> list[PersonRecord]:
        dets = read_json(path, "detection file")
        if not isinstance(dets, list):
            raise MipnetError(f"{path}: expected a list of detections")
        k = self.keypoint_set.num_joints
        records = []
        for i, det in enumerate(dets):
            try:
                img_id, box, score = det["image_id"], det["bbox"], float(det["score"])
            except (KeyError, TypeError, ValueError):
                raise MipnetError(
                    f"{path}: detection {i} needs image_id, bbox and score"
                ) from None
            if det.get("category_id", 1) != 1 or score < threshold:
                continue
            if img_id not in self.images:
                raise MipnetError(f"{path}: detection {i} refers to unknown image {img_id}")
            if not (isinstance(box, list) and len(box) == 4 and finite([*box, score])):
                raise MipnetError(f"{path}: detection {i} needs a bbox of four finite numbers "
                                  "and a finite score")
            if not (box[2] > 0 and box[3] > 0):
                continue
            center, scale = box_to_center_scale(box, self.aspect_ratio, self.box_padding)
            records.append(PersonRecord(
                image_id=img_id, image_file=self.images[img_id]["file_name"], ann_id=-1,
                center=center, scale=scale, joints=np.zeros((k, 2)), vis=np.zeros(k),
                score=score,
            ))
        return records

    def _check_images(self) -> None:
        missing = sorted({r.image_file for r in self.records
                          if not (self.image_dir / r.image_file).is_file()})
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise MipnetError(f"{self.image_dir / missing[0]}: image file not found{more}")

    # ---------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.records)

    def read_image(self, rec: PersonRecord) -> np.ndarray:
        """The record's image as RGB uint8, EXIF orientation ignored (annotations ignore it)."""
        path = self.image_dir / rec.image_file
        img = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise MipnetError(f"{path}: cannot read image")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def instances(self, index: int) -> list[PersonRecord]:
        """The N people a sample is trained on, before the in-crop check: B0, then neighbours.

        Missing neighbours (fewer people in the image) are filled with B0.
        """
        rec = self.records[index]
        people = [rec] + [self.records[j] for j in rec.neighbours]
        return people + [rec] * (self.num_instances - len(people))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        rec = self.records[index]
        people = self.instances(index)
        image = self.read_image(rec)
        joints = np.stack([p.joints for p in people])
        vis = np.stack([p.vis for p in people])

        if self.train:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            crop = sample_crop(
                rec.center, rec.scale, rec.joints, rec.vis, self.keypoint_set,
                image.shape[1], self.aspect_ratio, self.augment, rng,
            )
        else:
            crop = CropParams(center=rec.center.copy(), scale=rec.scale.copy())
        # Every other person of the image rides along (for families whose heads see all the
        # people of a crop, e.g. MoveNet's joint heatmaps), padded to MAX_CONTEXT.
        others = [self.records[j] for j in rec.others]
        k = self.keypoint_set.num_joints
        context = np.zeros((MAX_CONTEXT, k, 2), np.float64)
        context_vis = np.zeros((MAX_CONTEXT, k), np.float64)
        for i, p in enumerate(others):
            context[i], context_vis[i] = p.joints, p.vis
        n = len(people)
        patch, moved, moved_vis, _ = apply_crop(
            image, np.concatenate([joints, context]), np.concatenate([vis, context_vis]), crop,
            self.keypoint_set, self.image_size
        )
        joints, vis = moved[:n], moved_vis[:n]
        context, context_vis = moved[n:], moved_vis[n:]
        if self.train and self.augment.color_jitter > 0:
            patch = color_jitter(patch, self.augment.color_jitter, rng)

        # Same person as B0 (padding) or too little of the person left in the crop: learn B0.
        fallback = np.array([p is rec for p in people])
        fallback[0] = False
        for i in range(1, self.num_instances):
            if fallback[i] or vis[i].sum() <= MIN_JOINTS_IN_CROP:
                joints[i], vis[i], fallback[i] = joints[0], vis[0], True

        targets, weights = generate_targets(
            joints, vis, self.image_size, self.heatmap_size, self.sigma
        )
        ann_ids = [rec.ann_id if fb else p.ann_id for p, fb in zip(people, fallback, strict=True)]
        meta = {
            "index": index,
            "image_id": rec.image_id,
            "image_file": rec.image_file,
            "ann_ids": torch.tensor(ann_ids, dtype=torch.int64),
            "fallback": torch.from_numpy(fallback),
            "joints": torch.from_numpy(joints.astype(np.float32)),
            "joints_vis": torch.from_numpy(vis.astype(np.float32)),
            "context_joints": torch.from_numpy(context.astype(np.float32)),
            "context_vis": torch.from_numpy(context_vis.astype(np.float32)),
            "center": torch.from_numpy(crop.center.astype(np.float32)),
            "scale": torch.from_numpy(crop.scale.astype(np.float32)),
            "rotation": float(crop.rotation),
            "flipped": crop.flipped,
            "score": float(rec.score),
        }
        return (
            normalize_image(patch), torch.from_numpy(targets), torch.from_numpy(weights), meta
        )


def normalize_image(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (3, H, W) float32: /255, then ImageNet (x - mean) / std.

    The same float32 operations as torchvision's ToTensor + Normalize (bit-identical), done in
    numpy, which avoids torch's thread pool for this small per-sample step.
    """
    x = rgb.transpose(2, 0, 1).astype(np.float32)
    x /= np.float32(255)
    x -= np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    x /= np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    return torch.from_numpy(x)
