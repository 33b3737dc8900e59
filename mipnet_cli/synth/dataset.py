"""Synthetic COCO person-keypoint datasets: configuration, parallel generation, statistics.

Every image draws its randomness from numpy's Generator seeded with (seed, index), so the same
seed gives byte-identical images and JSON whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import MipnetError
from ..core.files import atomic_path, write_json
from ..core.keypoints import COCO17, KeypointSet
from ..media.images import expand_inputs, read_image
from .background import background
from .composite import Cutout, composite_scene, load_cutouts
from .layouts import LayoutImage, layout_figures, load_layouts
from .scene import (
    PersonTruth,
    Scene,
    box_iou,
    camera_effects,
    distractors_for,
    dress,
    order_back_to_front,
    random_crowd,
    render_scene,
)

ANNOTATION_FILE = "annotations.json"
IMAGE_DIR = "images"


@dataclass
class SynthConfig:
    """What `mipnet synth` generates."""

    num_images: int = 100
    seed: int = 0
    width: int = 640
    height: int = 480
    min_people: int = 2
    max_people: int = 6
    overlap: float = 0.5  # target fraction of people with box IoU > 0.5 with another person
    scale_range: tuple[float, float] = (0.35, 0.9)  # body height / image height
    distractors: float = 0.6  # mean number of foreground distractor shapes per image
    min_visible: float = 0.1  # people with less of their body visible are not annotated
    layouts: str | None = None  # COCO / CrowdPose file whose people are re-enacted
    max_size: int | None = 800  # cap on the longer side of layout-sized images
    image_format: str = "jpg"
    jpeg_quality: int = 92
    # Crowds of real people (see composite.py): COCO-format keypoint files with segmentation
    # and their image folders, pairwise; the person split to draw from; optional folder of
    # person-free real photos used as backgrounds for half the images.
    real_people: tuple[str, ...] = ()
    real_images: tuple[str, ...] = ()
    person_split: str = "train"
    val_fraction: float = 0.2
    backgrounds: str | None = None

    def validate(self) -> None:
        """Raise MipnetError for settings that cannot work."""
        problems = []
        if self.num_images < 1:
            problems.append("--num-images must be at least 1")
        if self.width < 32 or self.height < 32:
            problems.append("image size must be at least 32x32")
        if not 0 <= self.min_people <= self.max_people or self.max_people < 1:
            problems.append("need 0 <= --min-people <= --max-people and --max-people >= 1")
        if not 0.0 <= self.overlap <= 1.0:
            problems.append("--overlap must be between 0 and 1")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            problems.append("scale range must satisfy 0 < min <= max")
        if self.image_format not in ("jpg", "png"):
            problems.append("--format must be jpg or png")
        if not 0.0 <= self.min_visible <= 1.0:
            problems.append("--min-visible must be between 0 and 1")
        if self.max_size is not None and self.max_size < 32:
            problems.append("--max-size must be at least 32")
        if len(self.real_people) != len(self.real_images):
            problems.append("give one --real-images folder for each --real-people file")
        if self.real_people and self.layouts:
            problems.append("--real-people and --layouts are two kinds of scene: give one")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append("--val-fraction must be in [0, 1)")
        if problems:
            raise MipnetError("; ".join(problems))


@dataclass
class SynthStats:
    """Crowding statistics of what was written (and how fast)."""

    images: int = 0
    people: int = 0
    max_people_per_image: int = 0
    crowded_people: int = 0  # people whose box IoU with another person exceeds 0.5
    sum_max_iou: float = 0.0
    sum_crowd_index: float = 0.0
    images_with_people: int = 0
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))  # v=0, 1, 2
    seconds: float = 0.0

    @property
    def people_per_image(self) -> float:
        return self.people / max(self.images, 1)

    @property
    def crowded_fraction(self) -> float:
        """Fraction of people with max box IoU > 0.5 (OCHuman reports 68 % for its people)."""
        return self.crowded_people / max(self.people, 1)

    @property
    def mean_max_iou(self) -> float:
        return self.sum_max_iou / max(self.people, 1)

    @property
    def crowd_index(self) -> float:
        """CrowdPose's crowd index averaged over images with people."""
        return self.sum_crowd_index / max(self.images_with_people, 1)

    @property
    def occluded_fraction(self) -> float:
        """Fraction of keypoints inside the image that are covered (v=1)."""
        return float(self.keypoints[1] / max(self.keypoints[1] + self.keypoints[2], 1))

    @property
    def outside_fraction(self) -> float:
        """Fraction of keypoints outside the image (v=0)."""
        return float(self.keypoints[0] / max(self.keypoints.sum(), 1))

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def add(self, people: list[PersonTruth]) -> None:
        """Count one image's annotated people."""
        self.images += 1
        n = len(people)
        self.people += n
        self.max_people_per_image = max(self.max_people_per_image, n)
        if n == 0:
            return
        self.images_with_people += 1
        boxes = np.array([p.box for p in people])
        iou = box_iou(boxes, boxes)
        np.fill_diagonal(iou, 0.0)
        max_iou = iou.max(1)
        self.crowded_people += int((max_iou > 0.5).sum())
        self.sum_max_iou += float(max_iou.sum())
        self.sum_crowd_index += crowd_index(people)
        for p in people:
            self.keypoints += np.bincount(p.keypoints[:, 2].astype(np.int64), minlength=3)

    def merge(self, other: SynthStats) -> None:
        """Add another run's counts and time."""
        self.images += other.images
        self.people += other.people
        self.max_people_per_image = max(self.max_people_per_image, other.max_people_per_image)
        self.crowded_people += other.crowded_people
        self.sum_max_iou += other.sum_max_iou
        self.sum_crowd_index += other.sum_crowd_index
        self.images_with_people += other.images_with_people
        self.keypoints = self.keypoints + other.keypoints
        self.seconds += other.seconds

    def summary(self) -> dict[str, float]:
        """The headline numbers (no timing, so they are reproducible)."""
        return {
            "images": self.images, "people": self.people,
            "people_per_image": round(self.people_per_image, 4),
            "max_people_per_image": self.max_people_per_image,
            "crowded_fraction": round(self.crowded_fraction, 4),
            "mean_max_iou": round(self.mean_max_iou, 4),
            "crowd_index": round(self.crowd_index, 4),
            "occluded_keypoint_fraction": round(self.occluded_fraction, 4),
            "outside_keypoint_fraction": round(self.outside_fraction, 4),
        }


def crowd_index(people: list[PersonTruth]) -> float:
    """CrowdPose's crowd index: mean over people of (others' joints in my box) / (my joints)."""
    values = []
    for i, p in enumerate(people):
        mine = int((p.keypoints[:, 2] > 0).sum())
        if mine == 0:
            continue
        x0, y0, x1, y1 = p.box
        inside = 0
        for j, q in enumerate(people):
            if j != i:
                k = q.keypoints[q.keypoints[:, 2] > 0]
                inside += int(((k[:, 0] >= x0) & (k[:, 0] <= x1) & (k[:, 1] >= y0)
                               & (k[:, 1] <= y1)).sum())
        values.append(inside / mine)
    return float(np.mean(values)) if values else 0.0


def annotation(person: PersonTruth, image_id: int, ann_id: int) -> dict:
    """A COCO person annotation (keypoints of v=0 are written as 0, 0, 0 like COCO)."""
    kps = person.keypoints.copy()
    kps[kps[:, 2] == 0] = 0
    x0, y0, x1, y1 = (float(v) for v in person.box)
    ann = {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": float(person.visible_area),
        "segmentation": person.segmentation,
        "keypoints": [round(float(v), 2) if i % 3 < 2 else int(v)
                      for i, v in enumerate(kps.ravel())],
        "num_keypoints": int((kps[:, 2] > 0).sum()),
    }
    if person.track_id is not None:
        ann["track_id"] = person.track_id
    return ann


def keep_visible(people: list[PersonTruth], min_visible: float) -> list[PersonTruth]:
    """People with enough of their body visible and at least one labelled keypoint."""
    return [p for p in people if p.visible_area >= min_visible * p.full_area and p.visible_area > 0
            and (p.keypoints[:, 2] > 0).any()]


def _layout_order(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, 0x5EED]).permutation(count)


class SampleRenderer:
    """Renders sample `index` of a configuration (picklable; one per worker process)."""

    def __init__(self, config: SynthConfig, layouts: tuple[list[LayoutImage], KeypointSet] | None
                 = None):
        self.config = config
        self.layouts = layouts
        self.order = _layout_order(config.seed, len(layouts[0])) if layouts else None
        self.cutouts: list[Cutout] = []
        for ann, images in zip(config.real_people, config.real_images, strict=True):
            self.cutouts += load_cutouts(ann, images, config.person_split, config.val_fraction)
        if config.real_people and len(self.cutouts) < max(1, config.max_people):
            raise MipnetError(f"only {len(self.cutouts)} people of the {config.person_split} "
                              f"split can be cut out of {', '.join(config.real_people)} "
                              f"(need at least --max-people {config.max_people})")
        self.backgrounds = (sorted(expand_inputs([config.backgrounds]))
                            if config.backgrounds else [])

    def render(self, index: int) -> Scene:
        """The scene of one sample, people below min_visible already removed."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, index])
        if self.cutouts:
            n = int(rng.integers(cfg.min_people, cfg.max_people + 1))
            base = None
            if self.backgrounds and rng.random() < 0.5:
                photo = read_image(self.backgrounds[int(rng.integers(len(self.backgrounds)))])
                base = cv2.resize(photo, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
            scene = composite_scene(rng, self.cutouts, cfg.width, cfg.height, n, cfg.overlap,
                                    cfg.scale_range, base)
            scene.image = camera_effects(rng, scene.image)
            scene.people = keep_visible(scene.people, cfg.min_visible)
            return scene
        if self.layouts is not None:
            images, kset = self.layouts
            layout = images[int(self.order[index % len(images)])].scaled(cfg.max_size)
            width, height = layout.width, layout.height
            figures = order_back_to_front(rng, layout_figures(layout, kset, rng))
        else:
            width, height = cfg.width, cfg.height
            n = int(rng.integers(cfg.min_people, cfg.max_people + 1))
            figures = random_crowd(rng, n, width, height, cfg.overlap, cfg.scale_range)
        base = background(rng, height, width)
        people = dress(rng, figures)
        scene = render_scene(people, base, distractors_for(rng, figures, height, width,
                                                           cfg.distractors))
        scene.image = camera_effects(rng, scene.image)
        scene.people = keep_visible(scene.people, cfg.min_visible)
        return scene

    def write(self, index: int, out_dir: Path) -> tuple[dict, list[PersonTruth]]:
        """Render and write sample `index`; the image entry and its people."""
        scene = self.render(index)
        cfg = self.config
        name = f"{index:06d}.{cfg.image_format}"
        params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.image_format == "jpg" \
            else [cv2.IMWRITE_PNG_COMPRESSION, 3]
        ok, buf = cv2.imencode(f".{cfg.image_format}", scene.image[:, :, ::-1], params)
        if not ok:
            raise MipnetError(f"could not encode {name}")
        with atomic_path(out_dir / IMAGE_DIR / name) as tmp:
            tmp.write_bytes(buf.tobytes())
        h, w = scene.image.shape[:2]
        entry = {"id": index + 1, "file_name": name, "width": w, "height": h}
        return entry, scene.people


_WORKER: tuple[SampleRenderer, Path] | None = None


def _init_worker(gen: SampleRenderer, out_dir: Path) -> None:
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = (gen, out_dir)


def _work(index: int) -> tuple[dict, list[PersonTruth]]:
    assert _WORKER is not None
    return _WORKER[0].write(index, _WORKER[1])


def generate_dataset(out_dir: str | Path, config: SynthConfig, workers: int = 1,
                     progress: Callable[[int, int], None] | None = None) -> SynthStats:
    """Write `out_dir/images/*.jpg` and `out_dir/annotations.json`; return the statistics."""
    config.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MipnetError(f"{out}: exists and is not a directory")
    layouts = load_layouts(config.layouts) if config.layouts else None
    gen = SampleRenderer(config, layouts)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    stats = SynthStats()
    images, annotations = [], []
    n = config.num_images
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, _init_worker, (gen, out)) as pool:
            results = pool.imap(_work, range(n), chunksize=max(1, min(8, n // (4 * workers))))
            _collect(results, stats, images, annotations, progress, n)
    else:
        _collect((gen.write(i, out) for i in range(n)), stats, images, annotations, progress, n)
    info = {"description": "mipnet synthetic occluded crowds",
            "config": asdict(config),
            "crowding": stats.summary()}
    write_json(out / ANNOTATION_FILE, {
        "info": info, "images": images, "annotations": annotations,
        "categories": [COCO17.coco_category()],
    })
    stats.seconds = time.perf_counter() - start
    return stats


def _collect(results, stats: SynthStats, images: list, annotations: list,
             progress: Callable[[int, int], None] | None, total: int) -> None:
    for done, (entry, people) in enumerate(results, 1):
        images.append(entry)
        stats.add(people)
        for p in people:
            annotations.append(annotation(p, entry["id"], len(annotations) + 1))
        if progress is not None:
            progress(done, total)
