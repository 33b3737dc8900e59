"""Figures of what the network sees in a box: λ-sweep frames, contact sheets, GIFs, joint
trajectories and per-instance heatmap grids (matplotlib's object API, no pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from ..core.files import atomic_path
from ..core.keypoints import KeypointSet
from ..core.results import Box, Pose
from ..media.render import OUTLINE, _font, draw_poses
from ..pose.engine import PoseEstimator
from .sweep import LambdaSweep, box_heatmaps, display_crop, to_crop

DPI = 100


def lambda_label(lam: Sequence[float]) -> str:
    """"λ=[0.8, 0.2]": the selector with at most two decimals."""
    return "λ=[" + ", ".join(f"{v:.2f}".rstrip("0").rstrip(".") for v in lam) + "]"


def _label(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write `text` in the top-left corner of an image (white on a dark outline)."""
    canvas = Image.fromarray(rgb)
    size = max(10, rgb.shape[0] // 16)
    ImageDraw.Draw(canvas).text((4, 3), text, fill=(255, 255, 255), font=_font(size),
                                stroke_width=max(1, size // 7), stroke_fill=OUTLINE)
    return np.array(canvas)


def sweep_frames(image: np.ndarray, sweep: LambdaSweep, keypoint_set: KeypointSet,
                 cell_height: int = 256, kpt_thresh: float = 0.0) -> list[np.ndarray]:
    """One RGB picture per sweep step: the box's crop with that step's pose and its λ.

    Steps nearer the box's own person (a >= 0.5) are drawn as instance 0, the others as
    instance 1 (dashed, in the second colour), as `mipnet predict` draws them.
    """
    h, w = sweep_crop_size(sweep, cell_height)
    crop, matrix = display_crop(image, sweep.center, sweep.scale, (w, h))
    frames = []
    for a, lam, kps in zip(sweep.alphas, sweep.lambdas, sweep.keypoints, strict=True):
        instance = 0 if a >= 0.5 else 1
        pose = Pose(keypoints=to_crop(kps, matrix), score=1.0, box_id=0, instance=instance,
                    track_id=instance)
        drawn = draw_poses(crop, [pose], keypoint_set, kpt_thresh=kpt_thresh)
        frames.append(_label(drawn, lambda_label(lam)))
    return frames


def sweep_crop_size(sweep: LambdaSweep, cell_height: int) -> tuple[int, int]:
    """(height, width) of the sweep pictures: `cell_height` at the crop's aspect ratio."""
    sx, sy = (float(v) for v in sweep.scale)
    return cell_height, max(2, round(cell_height * sx / sy))


def contact_sheet(frames: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Equal-size RGB pictures in a grid, row by row: (rows·h, columns·w, 3) uint8."""
    if not frames or columns < 1:
        raise ValueError("need at least one picture and one column")
    h, w = frames[0].shape[:2]
    rows = -(-len(frames) // columns)
    sheet = np.full((rows * h, columns * w, 3), 24, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = frame
    return sheet


def save_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 4.0) -> None:
    """An animated GIF (looping) of RGB pictures, written atomically."""
    if not frames:
        raise ValueError("an animation needs at least one picture")
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=round(1000 / fps), loop=0)


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Save a figure at its own size and DPI, atomically (format from the extension)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=fig.dpi)


def trajectory_figure(sweep: LambdaSweep, keypoint_set: KeypointSet,
                      size: tuple[int, int] = (1400, 520)) -> Figure:
    """Each joint's x and y (image pixels) against λ's first component a, from 1 (the box's own
    person) to 0 (the nearest other person); `size` is (width, height) in pixels."""
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    axes = fig.subplots(1, 2, sharex=True)
    colors = colormaps["tab20"](np.linspace(0, 1, keypoint_set.num_joints))
    for ax, coord, name in zip(axes, (0, 1), ("x", "y"), strict=True):
        for j, joint in enumerate(keypoint_set.names):
            ax.plot(sweep.alphas, sweep.keypoints[:, j, coord], color=colors[j], marker="o",
                    markersize=3, linewidth=1.4, label=joint)
        ax.set_xlim(1.0, 0.0)
        ax.set_xlabel("a in λ = [a, 1 − a]   (1: the box's person → 0: the other person)")
        ax.set_ylabel(f"{name} (pixels)")
        ax.grid(alpha=0.3)
    axes[1].invert_yaxis()  # image y grows downwards
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.suptitle("Joint positions along the instance selector λ")
    fig.subplots_adjust(left=0.06, right=0.86, bottom=0.13, top=0.88, wspace=0.22)
    return fig


@dataclass(frozen=True)
class GridLayout:
    """Pixel layout of a heatmap grid."""

    rows: int
    cols: int
    cell_w: int
    cell_h: int
    left: int = 96  # row labels
    top: int = 64  # title and joint names
    right: int = 90  # colour bar
    bottom: int = 12
    gap: int = 4

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the figure in pixels."""
        return (self.left + self.cols * self.cell_w + (self.cols - 1) * self.gap + self.right,
                self.top + self.rows * self.cell_h + (self.rows - 1) * self.gap + self.bottom)

    def cell(self, r: int, c: int) -> list[float]:
        """The [left, bottom, width, height] figure fraction of cell (r, c)."""
        w, h = self.size
        x = self.left + c * (self.cell_w + self.gap)
        y = h - self.top - (r + 1) * self.cell_h - r * self.gap
        return [x / w, y / h, self.cell_w / w, self.cell_h / h]


def heatmap_layout(rows: int, joints: int, crop_aspect: float, cell_height: int = 160
                   ) -> GridLayout:
    """The layout for `rows` instances and `joints` joint columns plus the maximum."""
    return GridLayout(rows, joints + 1, max(2, round(cell_height * crop_aspect)), cell_height)


def heatmap_grid(image: np.ndarray, center: np.ndarray, scale: np.ndarray,
                 heatmaps: np.ndarray, lambdas: np.ndarray, keypoint_set: KeypointSet,
                 keypoints: np.ndarray | None = None, cell_height: int = 160,
                 title: str = "") -> Figure:
    """One row per instance λ, one column per joint plus their maximum: the heatmaps (N, K, h,
    w) blended over the box's crop on one shared colour scale (with a colour bar); `keypoints`
    (N, K, 3, image pixels) are marked where given."""
    n, k = heatmaps.shape[:2]
    sx, sy = (float(v) for v in scale)
    layout = heatmap_layout(n, k, sx / sy, cell_height)
    size = (layout.cell_w, layout.cell_h)
    crop, matrix = display_crop(image, center, scale, size)
    width, height = layout.size
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    vmax = max(float(heatmaps.max()), 1e-6)
    names = [*keypoint_set.names, "max"]
    mappable = None
    for r in range(n):
        maps = np.concatenate([heatmaps[r], heatmaps[r].max(axis=0, keepdims=True)])
        marks = to_crop(keypoints[r], matrix) if keypoints is not None else None
        for c in range(k + 1):
            ax = fig.add_axes(layout.cell(r, c))
            ax.imshow(crop)
            up = cv2.resize(np.clip(maps[c], 0, None).astype(np.float32), size,
                            interpolation=cv2.INTER_LINEAR)
            mappable = ax.imshow(up, cmap="jet", alpha=0.55, vmin=0.0, vmax=vmax)
            if marks is not None and c < k:
                ax.plot(marks[c, 0], marks[c, 1], marker="x", color="white", markersize=6,
                        markeredgewidth=1.5)
            ax.set_xlim(-0.5, size[0] - 0.5)
            ax.set_ylim(size[1] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(names[c].replace("_", " "), fontsize=7, rotation=30, loc="left")
            if c == 0:
                ax.set_ylabel(lambda_label(lambdas[r]), fontsize=9)
    cbar = fig.add_axes([(width - layout.right + 14) / width,
                         (layout.bottom + 4) / height, 14 / width,
                         (height - layout.top - layout.bottom - 8) / height])
    fig.colorbar(mappable, cax=cbar).set_label("heatmap value", fontsize=8)
    if title:
        fig.text(8 / width, 1 - 16 / height, title, fontsize=10, va="center")
    return fig


def write_heatmap_grids(out: str | os.PathLike, stem: str, image: np.ndarray,
                        estimator: PoseEstimator, boxes: Sequence[Box], cell_height: int = 160
                        ) -> list[Path]:
    """Write `{stem}_box{id}_heatmaps.png` in `out` for each box; return the paths."""
    if not boxes:
        return []
    maps = box_heatmaps(estimator, image, [b.xywh for b in boxes])
    paths = []
    for i, b in enumerate(boxes):
        fig = heatmap_grid(image, maps.centers[i], maps.scales[i], maps.heatmaps[i],
                           maps.lambdas, estimator.keypoint_set, maps.keypoints[i], cell_height,
                           title=f"{stem}: box {b.id} {np.round(b.xywh, 1).tolist()}")
        path = Path(out) / f"{stem}_box{b.id}_heatmaps.png"
        save_figure(fig, path)
        paths.append(path)
    return paths
