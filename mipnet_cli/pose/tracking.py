"""Person ids across video frames (greedy OKS + box IoU matching) and One-Euro smoothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.keypoints import KeypointSet
from ..core.oks import oks_iou
from ..core.results import Pose


class OneEuroFilter:
    """The One-Euro filter (Casiez et al., CHI 2012) over an array signal, element-wise.

    An adaptive low-pass: its cutoff is `min_cutoff + beta * |speed|` (Hz), so a still signal is
    smoothed hard (little jitter) and a fast one lightly (little lag). The speed is itself
    low-passed at `d_cutoff` Hz. Times are in seconds and must increase.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be positive and beta non-negative")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """The filtered value of sample `x` taken at time `t`."""
        x = np.asarray(x, np.float64)
        if self._x is None or self._dx is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self._dx), dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


def _extent(keypoints: np.ndarray, kpt_thresh: float) -> np.ndarray | None:
    """The box [x0, y0, x1, y1] around the joints above `kpt_thresh`; None if there are none."""
    sure = keypoints[:, 2] >= kpt_thresh
    if not sure.any():
        return None
    xy = keypoints[sure, :2]
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)])


def pose_box(pose: Pose, kpt_thresh: float) -> np.ndarray | None:
    """Where a pose is, xyxy: the person box it was found in for a box's own person (instance
    0; a detector box moves smoothly from frame to frame), else the extent of its joints above
    `kpt_thresh` (a secondary instance shares its box with another person), else the box (no
    confident joint: a small or blurred person); None when it has neither."""
    box = None
    if len(pose.box_xywh) == 4 and pose.box_xywh[2] > 0 and pose.box_xywh[3] > 0:
        x, y, w, h = (float(v) for v in pose.box_xywh)
        box = np.array([x, y, x + w, y + h])
    if box is not None and pose.instance == 0:
        return box
    extent = _extent(np.asarray(pose.keypoints, np.float64), kpt_thresh)
    return extent if extent is not None else box


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 1.0) * max(box[3] - box[1], 1.0))


@dataclass
class _Track:
    id: int
    keypoints: np.ndarray  # (K, 3) as last seen (before smoothing)
    box: np.ndarray  # where it was last seen (`pose_box`), xyxy
    last_seen: int
    smoother: OneEuroFilter | None = field(default=None, repr=False)


class PoseTracker:
    """Gives each pose of successive frames a `track_id` that follows the person.

    A pose is matched to a track by similarity `(OKS + IoU) / 2` between the pose and the track's
    last pose (OKS with the area of the track's box and the COCO sigmas, over the joints above
    `kpt_thresh`; IoU of the boxes, see `pose_box`: the person box of a box's own person, the
    joints' extent of a secondary instance). Pairs are taken greedily, most
    similar first, when at least `min_similarity`; tracks unseen for more than `max_age` updates
    are forgotten; unmatched poses start new tracks (ids 1, 2, ...). With `smooth`, each track's
    keypoint coordinates go through a One-Euro filter (`cutoff` Hz, `beta`).
    """

    def __init__(self, keypoint_set: KeypointSet, *, max_age: int = 5,
                 min_similarity: float = 0.3, kpt_thresh: float = 0.3, smooth: bool = False,
                 cutoff: float = 1.0, beta: float = 0.05) -> None:
        if max_age < 0 or not 0.0 <= min_similarity <= 1.0 or cutoff <= 0 or beta < 0:
            raise ValueError("need max_age >= 0, min_similarity in [0, 1], cutoff > 0, beta >= 0")
        self.sigmas = keypoint_set.sigmas_array
        self.max_age, self.min_similarity, self.kpt_thresh = max_age, min_similarity, kpt_thresh
        self.smooth, self.cutoff, self.beta = smooth, cutoff, beta
        self.tracks: list[_Track] = []
        self.next_id = 1
        self.frame = -1

    def similarity(self, track: _Track, keypoints: np.ndarray, box: np.ndarray) -> float:
        oks = oks_iou(track.keypoints, keypoints[None], _area(track.box), [_area(box)],
                      self.sigmas, in_vis_thre=self.kpt_thresh)[0]
        return 0.5 * (float(oks) + _iou(track.box, box))

    def update(self, poses: Sequence[Pose], t: float) -> None:
        """Set `track_id` on the poses of the next frame (time `t` in seconds), in place; with
        smoothing, replace their keypoints by the filtered ones."""
        self.frame += 1
        self.tracks = [k for k in self.tracks if self.frame - k.last_seen <= self.max_age]
        boxes = [pose_box(p, self.kpt_thresh) for p in poses]
        pairs = []
        for i, (pose, box) in enumerate(zip(poses, boxes, strict=True)):
            if box is None:
                continue
            kps = np.asarray(pose.keypoints, np.float64)
            for j, track in enumerate(self.tracks):
                sim = self.similarity(track, kps, box)
                if sim >= self.min_similarity:
                    pairs.append((sim, i, j))
        matched: dict[int, _Track] = {}
        used: set[int] = set()
        for _, i, j in sorted(pairs, key=lambda p: -p[0]):
            if i not in matched and j not in used:
                matched[i] = self.tracks[j]
                used.add(j)
        for i, (pose, box) in enumerate(zip(poses, boxes, strict=True)):
            kps = np.asarray(pose.keypoints, np.float64)
            track = matched.get(i)
            if track is None:
                track = _Track(self.next_id, kps, box if box is not None else np.zeros(4),
                               self.frame)
                if self.smooth:
                    track.smoother = OneEuroFilter(self.cutoff, self.beta)
                self.next_id += 1
                if box is not None:  # a pose without confident joints cannot be followed
                    self.tracks.append(track)
            else:
                track.keypoints, track.box, track.last_seen = kps, box, self.frame
            pose.track_id = track.id
            if track.smoother is not None:
                smoothed = kps.copy()
                smoothed[:, :2] = track.smoother(kps[:, :2], t)
                pose.keypoints = smoothed.astype(np.asarray(pose.keypoints).dtype)
