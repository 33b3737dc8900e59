"""Output writers for predicted poses: COCO keypoint results, COCO datasets and overlays.

Every file is written to a temporary name beside its destination and renamed when complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from ..core.errors import MipnetError
from ..core.files import atomic_path, json_line, remove_stale_temps, temp_prefix, write_json
from ..core.keypoints import KeypointSet
from ..core.results import ImagePoses, Pose
from .render import draw_poses, save_image

CATEGORY_ID = 1  # "person" in COCO files


def unique_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A name per image for COCO `file_name` and overlay files.

    The plain file name when no two inputs share it, else every path relative to the inputs'
    common folder (with '/' separators), so no two images get the same name.
    """
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    resolved = [Path(p).resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return [p.relative_to(root).as_posix() for p in resolved]


def _keypoint_box(xy: np.ndarray) -> list[float]:
    """[x, y, w, h] around points (N, 2); zeros when there are none."""
    if len(xy) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def _rounded(values: np.ndarray, decimals: int = 4) -> list[float]:
    rounded = np.round(np.asarray(values, np.float64).reshape(-1), decimals) + 0.0  # no -0.0
    return [float(v) for v in rounded]


def pose_result(image_id: int, pose: Pose) -> dict[str, Any]:
    """One COCO keypoint result; `bbox` is the box the pose was found in (xywh)."""
    kps = np.asarray(pose.keypoints, np.float64)
    bbox = pose.box_xywh or _keypoint_box(kps[:, :2])
    entry: dict[str, Any] = {
        "image_id": int(image_id),
        "category_id": CATEGORY_ID,
        "keypoints": _rounded(kps),
        "score": round(float(pose.score), 6),
        "bbox": _rounded(np.asarray(bbox)),
        "box_id": int(pose.box_id),
        "instance": int(pose.instance),
    }
    if pose.track_id is not None:
        entry["track_id"] = int(pose.track_id)
    if pose.psm is not None:
        entry["psm"] = round(float(pose.psm), 6)
    if pose.recovered:
        entry["recovered"] = True
    return entry


def pose_results(images: Iterable[ImagePoses]) -> list[dict[str, Any]]:
    """COCO keypoint results (`loadRes`-ready) for all poses of the images."""
    return [pose_result(r.image_id, pose) for r in images for pose in r.poses]


def write_pose_results(path: str | os.PathLike, images: Iterable[ImagePoses]) -> int:
    """Write COCO keypoint results as a JSON list, atomically; return the number of entries."""
    results = pose_results(images)
    write_json(path, results)
    return len(results)


def _annotation(ann_id: int, result: ImagePoses, pose: Pose, kpt_thresh: float) -> dict:
    """A COCO person annotation for one pose.

    Joints at or above `kpt_thresh` and inside the image are labelled (v = 2); the others are
    (0, 0, 0). The box is the person box for instance 0 and the extent of the labelled joints
    for other instances (the box belongs to someone else); clipped to the image.
    """
    kps = np.asarray(pose.keypoints, np.float64)
    xy, conf = kps[:, :2], kps[:, 2]
    inside = ((xy >= 0) & (xy <= [result.width, result.height])).all(axis=1)
    visible = (conf >= kpt_thresh) & inside & np.isfinite(kps).all(axis=1)
    triplets = np.zeros_like(kps)
    triplets[visible, :2] = xy[visible]
    triplets[visible, 2] = 2
    if (pose.instance == 0 or not visible.any()) and pose.box_xywh:
        x, y, w, h = pose.box_xywh
        x0, x1 = np.clip([x, x + w], 0, result.width)
        y0, y1 = np.clip([y, y + h], 0, result.height)
        bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    else:
        bbox = _keypoint_box(xy[visible])
    return {
        "id": ann_id,
        "image_id": int(result.image_id),
        "category_id": CATEGORY_ID,
        "keypoints": [float(v) if i % 3 < 2 else int(v)
                      for i, v in enumerate(np.round(triplets.reshape(-1), 2) + 0.0)],
        "num_keypoints": int(visible.sum()),
        "bbox": _rounded(np.asarray(bbox), 2),
        "area": round(bbox[2] * bbox[3], 2),
        "iscrowd": 0,
        "segmentation": [],  # CVAT's (Datumaro's) importer requires the field
        "score": round(float(pose.score), 6),
        "instance": int(pose.instance),
        "box_id": int(pose.box_id),
    }


def coco_dataset(
    images: Sequence[ImagePoses],
    keypoint_set: KeypointSet,
    kpt_thresh: float = 0.3,
    file_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A COCO person-keypoints dataset of the predictions, for annotation tools.

    Every image is listed, including those with nobody. `file_names` default to
    `unique_names` of the image paths.
    """
    names = list(file_names) if file_names is not None else unique_names([r.path for r in images])
    if len(names) != len(images):
        raise ValueError("file_names must have one name per image")
    ids = [r.image_id for r in images]
    if len(set(ids)) != len(ids):
        raise MipnetError("two images have the same image id; a COCO dataset needs distinct ids")
    annotations = []
    for result in images:
        for pose in result.poses:
            annotations.append(_annotation(len(annotations) + 1, result, pose, kpt_thresh))
    return {
        "info": {"description": "poses predicted by mipnet (MIPNet multi-instance pose "
                                "estimation)"},
        "licenses": [],
        "images": [{"id": int(r.image_id), "file_name": name, "width": int(r.width),
                    "height": int(r.height)} for r, name in zip(images, names, strict=True)],
        "annotations": annotations,
        "categories": [keypoint_set.coco_category()],
    }


def write_coco_dataset(
    path: str | os.PathLike,
    images: Sequence[ImagePoses],
    keypoint_set: KeypointSet,
    kpt_thresh: float = 0.3,
    file_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write `coco_dataset(...)` atomically and return it."""
    dataset = coco_dataset(images, keypoint_set, kpt_thresh, file_names)
    write_json(path, dataset)
    return dataset


def overlay_path(out_dir: str | os.PathLike, name: str) -> Path:
    """Where the overlay of image `name` goes: same relative name, its extension if OpenCV
    can write it, else .jpg."""
    target = Path(out_dir) / name
    return target if cv2.haveImageWriter(str(target)) else target.with_suffix(".jpg")


def write_overlay(
    path: str | os.PathLike,
    image_rgb: np.ndarray,
    result: ImagePoses,
    keypoint_set: KeypointSet,
    *,
    kpt_thresh: float = 0.3,
    radius: int | None = None,
    thickness: int | None = None,
    show_boxes: bool = False,
    show_scores: bool = False,
) -> None:
    """Draw the poses (and optionally boxes and scores) on the image and save it atomically."""
    drawn = draw_poses(image_rgb, result.poses, keypoint_set, boxes=result.boxes,
                       kpt_thresh=kpt_thresh, radius=radius, thickness=thickness,
                       show_boxes=show_boxes, show_scores=show_scores)
    save_image(path, drawn)


class CocoStream:
    """COCO image and annotation entries spooled to a temporary JSONL file, assembled at the end
    into a COCO dataset (two passes over the file; nothing accumulates in memory)."""

    def __init__(self, path: Path, keypoint_set: KeypointSet, file_name: str, info: dict,
                 kpt_thresh: float) -> None:
        self.path, self.keypoint_set, self.file_name = path, keypoint_set, file_name
        self.info, self.kpt_thresh = info, kpt_thresh
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        self.spool: IO[str] = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            "w+", encoding="utf-8", prefix=temp_prefix(path), suffix=".jsonl", dir=path.parent)

    def add(self, result: ImagePoses) -> None:
        part = coco_dataset([result], self.keypoint_set, self.kpt_thresh, [self.file_name])
        image = part["images"][0] | {"frame_index": result.frame_index,
                                     "timestamp": result.timestamp}
        for ann, pose in zip(part["annotations"], result.poses, strict=True):
            if pose.track_id is not None:
                ann["track_id"] = int(pose.track_id)
        self.spool.write(json_line({"image": image, "annotations": part["annotations"]},
                                   where=self.path) + "\n")

    def _entries(self) -> Iterator[dict]:
        self.spool.flush()
        self.spool.seek(0)
        for line in self.spool:
            yield json.loads(line)

    def write(self) -> None:
        """Assemble the dataset at `path` atomically."""
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write('{"info": ' + json.dumps(self.info) + ', "licenses": [], "images": [')
            for k, entry in enumerate(self._entries()):
                f.write((", " if k else "") + json.dumps(entry["image"]))
            f.write('], "annotations": [')
            ann_id = 0
            for entry in self._entries():
                for ann in entry["annotations"]:
                    ann_id += 1
                    ann["id"] = ann_id
                    f.write((", " if ann_id > 1 else "") + json.dumps(ann))
            f.write('], "categories": ' + json.dumps([self.keypoint_set.coco_category()]) + "}")

    def close(self) -> None:
        self.spool.close()


def read_frame_records(path: str | os.PathLike) -> tuple[list[dict], dict | None]:
    """The frame records of a `--json` JSON Lines file and its end record (None: the run was
    killed before it ended, so the frames may stop anywhere)."""
    records, end = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if "end" in record:
                    end = record["end"]
                else:
                    records.append(record)
    return records, end


def frame_record(result: ImagePoses) -> dict[str, Any]:
    """One line of the JSON Lines output: the frame and its poses (COCO keypoint results with
    `box_id`, `instance` and, when tracking, `track_id`)."""
    return {
        "frame_index": result.frame_index,
        "timestamp": result.timestamp,
        "image_id": result.image_id,
        "width": result.width,
        "height": result.height,
        "boxes": len(result.boxes),
        "poses": [pose_result(result.image_id, p) for p in result.poses],
    }
