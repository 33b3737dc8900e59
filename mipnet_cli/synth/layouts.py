"""Real crowd geometry: people placed at the boxes (and poses) of a COCO or CrowdPose file.

Annotated joints map onto the figure: the twelve limb joints are shared by COCO-17 and
CrowdPose-14; CrowdPose's head (top) and neck set the head's size, centre and tilt, COCO's face
points its centre and which way it looks. Joints that are not annotated come from a standing
template hung on the annotated ones; depth (for drawing order) comes from the facing direction
and from limb foreshortening.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.errors import MipnetError
from ..core.keypoints import CROWDPOSE14, KeypointSet, keypoint_set_for
from .body import (
    FACE_LOCAL,
    HEAD,
    L_HAND,
    L_TOE,
    NECK,
    PELVIS,
    Figure,
    PoseParams,
    pose_figure,
    sample_proportions,
)
from .scene import place_at, random_body

# Figure points of the twelve limb joints, in both keypoint sets' order (shoulders .. ankles).
LIMB_POINTS = tuple(range(5, 17))
# (child, parent) in the order missing joints are filled.
_CHAIN = ((7, 5), (8, 6), (9, 7), (10, 8), (13, 11), (14, 12), (15, 13), (16, 14))
_SEGMENT_LEN = {(5, 7): "upper_arm", (6, 8): "upper_arm", (7, 9): "forearm", (8, 10): "forearm",
                (11, 13): "thigh", (12, 14): "thigh", (13, 15): "shin", (14, 16): "shin"}


@dataclass
class LayoutPerson:
    """One annotated person: box (x, y, w, h) and keypoints (K, 3) or None."""

    box: np.ndarray
    keypoints: np.ndarray | None


@dataclass
class LayoutImage:
    """The people of one annotated image."""

    width: int
    height: int
    people: list[LayoutPerson]

    def scaled(self, max_size: int | None) -> LayoutImage:
        """The layout shrunk so that its longer side is at most max_size."""
        f = 1.0 if not max_size else min(1.0, max_size / max(self.width, self.height))
        if f == 1.0:
            return self
        people = [LayoutPerson(p.box * f, None if p.keypoints is None else
                               p.keypoints * np.array([f, f, 1.0])) for p in self.people]
        return LayoutImage(max(1, round(self.width * f)), max(1, round(self.height * f)), people)


def load_layouts(path: str | Path, min_box: float = 8.0) -> tuple[list[LayoutImage], KeypointSet]:
    """Images with at least one non-crowd person box from a COCO-style keypoint file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MipnetError(f"{path}: no such layout file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MipnetError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise MipnetError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations')")
    sizes = {}
    for img in data["images"]:
        try:
            sizes[img["id"]] = (int(img["width"]), int(img["height"]))
        except (KeyError, TypeError, ValueError):
            raise MipnetError(f"{path}: image entry without id, width and height: {img!r:.80}"
                              ) from None
    kset = None
    people: dict[int, list[LayoutPerson]] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("category_id", 1) != 1 or "bbox" not in ann:
            continue
        box = np.asarray(ann["bbox"], np.float64)
        if box.shape != (4,) or box[2] < min_box or box[3] < min_box:
            continue
        kps = None
        if ann.get("keypoints") and ann.get("num_keypoints", 1) > 0:
            kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
            try:
                found = keypoint_set_for(len(kps))
            except ValueError:
                raise MipnetError(f"{path}: annotation {ann.get('id')} has {len(kps)} keypoints;"
                                  " layouts read COCO-17 or CrowdPose-14") from None
            if kset is not None and found != kset:
                raise MipnetError(f"{path}: mixes {kset.name} and {found.name} keypoints")
            kset = found
        if ann.get("image_id") in sizes:
            people.setdefault(ann["image_id"], []).append(LayoutPerson(box, kps))
    images = [LayoutImage(*sizes[i], people[i]) for i in sorted(people)]
    if not images:
        raise MipnetError(f"{path}: no person boxes (non-crowd, at least {min_box:g} px) found")
    return images, kset if kset is not None else keypoint_set_for(17)


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else fallback


def figure_from_keypoints(kps: np.ndarray, kset: KeypointSet, rng: np.random.Generator
                          ) -> Figure | None:
    """A figure whose joints are the annotated ones; None when too few are annotated."""
    crowd = kset == CROWDPOSE14  # by value: worker processes get unpickled copies
    limb = kps[:12] if crowd else kps[5:17]
    valid = limb[:, 2] > 0
    if valid.sum() < 4:
        return None
    obs = np.full((24, 2), np.nan)
    obs[list(LIMB_POINTS)] = np.where(valid[:, None], limb[:, :2], np.nan)
    prop = sample_proportions(rng)

    # Scale (pixels per body height) from the least foreshortened annotated segments.
    ratios = []
    for (a, b), name in _SEGMENT_LEN.items():
        if not np.isnan(obs[[a, b]]).any():
            ratios.append(np.linalg.norm(obs[a] - obs[b]) / getattr(prop, name))
    for pair in ((5, 11), (6, 12)):
        if not np.isnan(obs[list(pair)]).any():
            ratios.append(np.linalg.norm(obs[pair[0]] - obs[pair[1]]) / (prop.spine - 0.015))
    if crowd and kps[12, 2] > 0 and kps[13, 2] > 0:
        ratios.append(np.linalg.norm(kps[12, :2] - kps[13, :2]) / 0.16)
    if len(ratios) < 2:
        return None
    s = float(np.percentile(ratios, 80))

    # Facing: the person's left shoulder (or hip) on the image right means facing the camera.
    c = None
    for a, b, half in ((5, 6, prop.shoulder_half), (11, 12, prop.hip_half)):
        if not np.isnan(obs[[a, b]]).any():
            c = float(np.clip((obs[a, 0] - obs[b, 0]) / (2 * half * s), -1, 1))
            break
    if c is None:
        c = float(rng.uniform(-1, 1))
    side = 1.0 if rng.random() < 0.5 else -1.0
    if not crowd:
        face = kps[:5]
        if face[0, 2] > 0 and (face[3, 2] > 0 or face[4, 2] > 0):
            ears = face[3:5][face[3:5, 2] > 0, 0].mean()
            side = 1.0 if face[0, 0] >= ears else -1.0
    yaw = float(np.arctan2(side * np.sqrt(1 - c * c), c))

    tmpl = pose_figure(PoseParams(), prop, yaw).rescaled(s)
    tp = tmpl.points
    known = ~np.isnan(obs[:, 0])
    shift = np.nanmean(obs[known] - tp[known, :2], axis=0)
    pts = tp.copy()
    pts[:, :2] += shift
    pts[known, :2] = obs[known]
    for a, b in ((5, 6), (6, 5), (11, 12), (12, 11), (5, 11), (6, 12), (11, 5), (12, 6)):
        if not known[a] and known[b]:
            pts[a, :2] = pts[b, :2] + tp[a, :2] - tp[b, :2]
            known[a] = True
    forward = 1.0 if c >= 0 else -1.0
    for child, parent in _CHAIN:
        seg = tp[child] - tp[parent]
        if not known[child]:
            pts[child, :2] = pts[parent, :2] + seg[:2]
        length = np.linalg.norm(seg)
        flat = np.linalg.norm(pts[child, :2] - pts[parent, :2])
        lift = np.sqrt(max(length ** 2 - flat ** 2, 0.0)) * forward * (-1 if child >= 15 else 1)
        pts[child, 2] = pts[parent, 2] + lift
    for i in (0, 1):
        fore = pts[9 + i] - pts[7 + i]
        pts[L_HAND + i] = pts[9 + i] + fore * prop.hand / prop.forearm
        pts[L_TOE + i] = pts[15 + i] + tp[L_TOE + i] - tp[15 + i]
    mid_sh, mid_hip = (pts[5] + pts[6]) / 2, (pts[11] + pts[12]) / 2
    body_up = _unit((mid_sh - mid_hip)[:2], np.array([0.0, -1.0]))
    pts[PELVIS] = mid_hip
    pts[NECK] = mid_sh
    pts[NECK, :2] += body_up * 0.025 * s

    # Head centre, size and tilt.
    r = prop.head_r * s
    centre = None
    up2 = body_up
    if crowd and kps[12, 2] > 0:
        top = kps[12, :2]
        base = kps[13, :2] if kps[13, 2] > 0 else pts[NECK, :2]
        up2 = _unit(top - base, body_up)
        r = float(np.clip(np.linalg.norm(top - base) / 2.5, 0.7 * r, 1.4 * r))
        centre = top - 1.05 * r * up2
    elif not crowd and (kps[:5, 2] > 0).any():
        centre = kps[:5][kps[:5, 2] > 0, :2].mean(0)
        up2 = _unit(centre - pts[NECK, :2], body_up)
    if centre is None:
        centre = pts[NECK, :2] + tp[HEAD, :2] - tp[NECK, :2]
    pts[HEAD] = [centre[0], centre[1], pts[NECK, 2]]
    up3 = np.array([up2[0], up2[1], 0.0])
    right3 = np.array([-up2[1], up2[0], 0.0])
    head_yaw = yaw + float(rng.normal(0, 0.15))
    fwd3 = np.cos(head_yaw) * np.array([0.0, 0.0, 1.0]) + np.sin(head_yaw) * right3
    axes = np.column_stack([np.cross(fwd3, up3), up3, fwd3])
    pts[:5] = pts[HEAD] + (FACE_LOCAL * r) @ axes.T
    return Figure(points=pts, head_axes=axes, scale=s, prop=replace(prop, head_r=r / s))


def fit_random_body(rng: np.random.Generator, box: np.ndarray) -> Figure:
    """A random body scaled and centred into an (x, y, w, h) box."""
    body = random_body(rng, float(np.radians(rng.uniform(-5, 15))))
    ext = body.extent()
    ew, eh = ext[2] - ext[0], ext[3] - ext[1]
    scale = min(box[3] / eh, 1.3 * box[2] / ew)
    return place_at(body, scale, box[0] + (box[2] - ew * scale) / 2,
                    box[1] + (box[3] - eh * scale) / 2)


def layout_figures(layout: LayoutImage, kset: KeypointSet, rng: np.random.Generator
                   ) -> list[Figure]:
    """Figures for every annotated person: posed from keypoints where possible."""
    figures = []
    for person in layout.people:
        fig = None
        if person.keypoints is not None:
            fig = figure_from_keypoints(person.keypoints, kset, rng)
        figures.append(fig if fig is not None else fit_random_body(rng, person.box))
    return figures
