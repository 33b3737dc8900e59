"""Keypoint sets as data: joint names, skeleton, flip pairs and OKS sigmas."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KeypointSet:
    """A named set of body joints and everything that depends on their order."""

    name: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]  # 0-based joint index pairs
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]  # OKS sigmas, already divided by 10
    upper_body: tuple[int, ...]  # joints used by half-body augmentation

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def flip_index(self) -> list[int]:
        """Permutation that maps each joint to its mirror image joint."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def coco_category(self) -> dict:
        """The COCO `categories` entry (1-based skeleton, as COCO files store it)."""
        return {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": list(self.names),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }


COCO17 = KeypointSet(
    name="coco",
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    sigmas=tuple(s / 10.0 for s in (
        0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72,
        0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
    )),
    upper_body=tuple(range(11)),
)

CROWDPOSE14 = KeypointSet(
    name="crowdpose",
    names=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
    ),
    # CrowdPose files ship the COCO-17 skeleton, which is wrong for 14 joints; this is the real one.
    skeleton=(
        (12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7),
        (6, 7), (6, 8), (8, 10), (7, 9), (9, 11),
    ),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    sigmas=tuple(s / 10.0 for s in (
        0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89, 0.79, 0.79,
    )),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
)

KEYPOINT_SETS: dict[str, KeypointSet] = {
    "coco": COCO17, "ochuman": COCO17, "crowdpose": CROWDPOSE14,
}


def get_keypoint_set(name: str) -> KeypointSet:
    """Look up a keypoint set by name (coco, ochuman, crowdpose)."""
    try:
        return KEYPOINT_SETS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown keypoint set {name!r}; choose one of {', '.join(KEYPOINT_SETS)}"
        ) from None


def keypoint_set_for(num_joints: int) -> KeypointSet:
    """The keypoint set with this many joints (17 -> COCO, 14 -> CrowdPose)."""
    for kps in (COCO17, CROWDPOSE14):
        if kps.num_joints == num_joints:
            return kps
    raise ValueError(f"no keypoint set has {num_joints} joints")
