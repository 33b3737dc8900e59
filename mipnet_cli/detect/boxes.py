"""Person boxes from files: COCO detection-result files (`--boxes`) and the ground-truth boxes of
COCO annotation files (`--gt`), looked up by image id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MipnetError
from ..core.files import finite, read_json
from ..core.results import Box
from ..data.dataset import load_coco_json


def _xywh(entry: Any) -> list[float] | None:
    bbox = entry.get("bbox") if isinstance(entry, dict) else None
    if isinstance(bbox, list) and len(bbox) == 4 and finite(bbox):
        return [float(v) for v in bbox]
    return None


def load_box_file(
    path: str | os.PathLike, score_thresh: float = 0.0, category_id: int = 1
) -> dict[int, list[Box]]:
    """Person boxes from a COCO detection-results file.

    The file is a JSON list of `{image_id, category_id, bbox: [x, y, w, h], score}`. Entries of
    other categories, below `score_thresh`, or with zero width or height are left out. A box's
    id is its position in the file; each image's boxes come best first. Images without a kept
    box are absent from the result.
    """
    data = read_json(path, "box file")
    if not isinstance(data, list):
        raise MipnetError(f"{path}: expected a JSON list of detections "
                          "[{image_id, category_id, bbox, score}, ...]")
    boxes: dict[int, list[Box]] = {}
    for index, entry in enumerate(data):
        xywh = _xywh(entry)
        if (xywh is None or not isinstance(entry.get("image_id"), int)
                or not isinstance(entry.get("category_id"), int)
                or not finite([entry.get("score", 1.0)])):
            raise MipnetError(
                f"{path}: detection {index} is malformed (needs integer image_id and "
                f"category_id, bbox [x, y, w, h] and a numeric score): {str(entry)[:120]}"
            )
        score = float(entry.get("score", 1.0))
        if entry["category_id"] != category_id or score < score_thresh:
            continue
        x, y, w, h = xywh
        if w <= 0 or h <= 0:
            continue
        box = Box(xyxy=np.array([x, y, x + w, y + h]), score=score, source="file", id=index)
        boxes.setdefault(entry["image_id"], []).append(box)
    for image_boxes in boxes.values():
        image_boxes.sort(key=lambda b: -b.score)
    return boxes


def _coco_annotations(path: str | os.PathLike) -> dict:
    data = load_coco_json(path)
    for i, img in enumerate(data["images"]):
        if not (isinstance(img, dict) and isinstance(img.get("id"), int)
                and isinstance(img.get("file_name"), str)):
            raise MipnetError(f"{path}: images[{i}] needs an integer id and a file_name")
    return data


def _person_category(data: dict, path: str | os.PathLike) -> int:
    categories = data.get("categories")
    if not categories:
        return 1
    for cat in categories:
        if isinstance(cat, dict) and cat.get("name") == "person":
            return int(cat["id"])
    raise MipnetError(f"{path}: has no 'person' category")


def load_gt_boxes(ann_path: str | os.PathLike, require_keypoints: bool = False
                  ) -> dict[int, list[Box]]:
    """Ground-truth person boxes from a COCO-format annotation file, for every listed image.

    Crowd regions (`iscrowd: 1`) are left out, and so are people without any labelled keypoint
    when `require_keypoints` is set (what HRNet's GT-box evaluation does). Boxes are clipped to
    the image; empty ones are left out. Box ids are annotation ids; scores are 1. Images with
    nobody map to an empty list.
    """
    data = _coco_annotations(ann_path)
    person = _person_category(data, ann_path)
    sizes = {img["id"]: (img.get("width"), img.get("height")) for img in data["images"]}
    boxes: dict[int, list[Box]] = {image_id: [] for image_id in sizes}
    for i, ann in enumerate(data["annotations"]):
        xywh = _xywh(ann)
        if xywh is None or not isinstance(ann.get("image_id"), int) or "id" not in ann:
            raise MipnetError(
                f"{ann_path}: annotations[{i}] needs id, image_id and bbox [x, y, w, h]"
            )
        if ann.get("category_id", person) != person or ann.get("iscrowd", 0):
            continue
        if require_keypoints and not ann.get("num_keypoints", 0):
            continue
        if ann["image_id"] not in sizes:
            raise MipnetError(f"{ann_path}: annotation {ann['id']} refers to unknown image "
                              f"{ann['image_id']}")
        x, y, w, h = xywh
        x0, y0, x1, y1 = x, y, x + w, y + h
        width, height = sizes[ann["image_id"]]
        if finite([width, height]):
            x0, x1 = np.clip([x0, x1], 0.0, float(width))
            y0, y1 = np.clip([y0, y1], 0.0, float(height))
        if x1 <= x0 or y1 <= y0:
            continue
        boxes[ann["image_id"]].append(
            Box(xyxy=np.array([x0, y0, x1, y1], dtype=np.float64), score=1.0, source="gt",
                id=int(ann["id"]))
        )
    return boxes


def image_ids_by_filename(ann_path: str | os.PathLike) -> dict[str, int]:
    """Map each image's file name (without folders) to its id in a COCO annotation file."""
    data = _coco_annotations(ann_path)
    ids: dict[str, int] = {}
    for img in data["images"]:
        name = Path(img["file_name"]).name
        if ids.get(name, img["id"]) != img["id"]:
            raise MipnetError(f"{ann_path}: file name {name} belongs to two images "
                              f"({ids[name]} and {img['id']})")
        ids[name] = img["id"]
    return ids
