"""Annotating image files: person boxes (detector, box file or ground truth) -> engine -> poses.

`Annotator.run(paths)` yields, in input order, one `ImagePoses` per readable image and one
`ImageFailure` per file that cannot be read or matched to an image id, so a long run survives
bad files. Images are read ahead on worker threads while the previous batch runs on the device,
and the boxes of a whole batch of images go through the network together.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .detector import (
    DEFAULT_DETECTOR,
    PersonDetector,
    image_ids_by_filename,
    load_box_file,
    load_gt_boxes,
    open_detector,
    weights_cached,
)
from .engine import EngineOptions, PoseEstimator, pick_device, whole_image_boxes
from .errors import MipnetError
from .images import expand_inputs, read_image
from .results import Box, ImagePoses, person_boxes
from .weights import (
    ZooEntry,
    default_entry,
    resolve_pose_weights,
    resolve_scorer_weights,
    shipped_detector,
)
from .yolox_detector import YoloxPersonDetector


@dataclass
class ImageFailure:
    """An input file that produced no result, and why (one line)."""

    path: str
    reason: str


class DetectorBoxes:
    """Person boxes found by a detector on each image. `entry` is the zoo entry of the shipped
    detector when that one runs because nothing else was named or could be had (`fallback`)."""

    source = "detector"

    def __init__(self, detector: PersonDetector | YoloxPersonDetector,
                 entry: ZooEntry | None = None, fallback: bool = False) -> None:
        self.detector = detector
        self.entry = entry
        self.fallback = fallback

    @property
    def demo(self) -> bool:
        """The detector is one trained on synthetic scenes only."""
        return self.entry is not None and self.entry.demo

    def boxes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[list[Box]]:
        return self.detector.detect(images)


class TableBoxes:
    """Person boxes looked up by image id (a detection-results file or ground-truth boxes)."""

    def __init__(self, table: dict[int, list[Box]], source: str, path: str = "") -> None:
        self.table = table
        self.source = source  # "file" | "gt"
        self.path = path

    def boxes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[list[Box]]:
        return [list(self.table.get(i, [])) for i in image_ids]

    def check_matches(self, image_ids: Sequence[int], what: str = "images") -> str:
        """How many of `image_ids` the table knows, as a line to show; MipnetError when it
        knows none of them (the ids of the file and of the inputs do not correspond)."""
        matched = sum(i in self.table for i in image_ids)
        if image_ids and not matched:
            known = sorted(self.table)
            sample = ", ".join(map(str, known[:5])) + (", ..." if len(known) > 5 else "")
            raise MipnetError(f"{self.path}: none of its image ids ({sample or 'none'}) is one "
                              f"of the {len(image_ids)} {what} (ids {min(image_ids)} to "
                              f"{max(image_ids)}); nothing to do")
        return f"boxes from {self.path} for {matched} of {len(image_ids)} {what}"


class WholeImage:
    """The whole image as the one "box" of each image: the input of whole-image (single-stage)
    networks, which find every person themselves."""

    source = "image"

    def boxes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[list[Box]]:
        return whole_image_boxes(images)


BoxSource = DetectorBoxes | TableBoxes | WholeImage


def detector_boxes(name: str | None, weights_path: str | os.PathLike | None,
                   score_thresh: float, nms_iou: float, device,
                   sizes: Sequence[int] | None = None) -> DetectorBoxes:
    """A person detector by name and/or weights file, with defaults.

    With neither, torchvision's COCO detector (DEFAULT_DETECTOR) when its weights are cached
    or can be downloaded, else the zoo's shipped default (the converted COCO YOLOX-Nano),
    marked `fallback`. A name alone that is the builder of a shipped zoo detector loads the
    shipped weights. `sizes`: the detector's input sizes (see `DetectorBase`).
    """
    def build(builder: str | None, path) -> PersonDetector | YoloxPersonDetector:
        return open_detector(builder, path, score_thresh=score_thresh, nms_iou=nms_iou,
                             device=device, sizes=sizes)

    if name is not None and weights_path is None:
        shipped = shipped_detector(name)
        if shipped is not None:
            return DetectorBoxes(build(name, shipped.local_path()), shipped)
    default = default_entry("detector")
    default_path = default.local_path() if default is not None else None
    try:
        return DetectorBoxes(build(name or DEFAULT_DETECTOR, weights_path))
    except MipnetError:
        if (name is not None or weights_path is not None or default_path is None
                or weights_cached(DEFAULT_DETECTOR)):
            raise
    return DetectorBoxes(build(default.builder, default_path), default, fallback=True)


def box_source(*, boxes: str | os.PathLike | None = None, gt: str | os.PathLike | None = None,
               detector: str | None = None, detector_weights: str | os.PathLike | None = None,
               det_thresh: float | None = None, det_nms: float = 0.5,
               det_sizes: Sequence[int] | None = None,
               device: str | torch.device | None = None, whole_image: bool = False
               ) -> BoxSource:
    """Where person boxes come from: a COCO detection-results file (`det_thresh` default 0, as
    in the official evaluation), else the boxes of the annotation file `gt` unless a detector
    is named, else a detector (see `detector_boxes`; `det_thresh` default 0.5; `det_sizes`
    its input sizes). For a `whole_image` network the whole image, and no box source may be
    named."""
    if whole_image:
        named = [n for n, v in (("--boxes", boxes), ("--detector", detector),
                                ("--detector-weights", detector_weights),
                                ("--det-size", det_sizes)) if v is not None]
        if named:
            raise MipnetError(f"this is a single-stage network: it finds the people itself; "
                              f"leave out {', '.join(named)}")
        return WholeImage()
    if boxes is not None and (detector is not None or detector_weights is not None):
        raise MipnetError("a box file and a detector are two box sources: give only one")
    gt_boxes = gt is not None and detector is None and detector_weights is None
    if det_sizes is not None and (boxes is not None or gt_boxes):
        raise MipnetError("--det-size sets the detector's input size, and the boxes come from "
                          f"{'--boxes' if boxes is not None else '--gt'}: leave it out")
    if boxes is not None:
        return TableBoxes(load_box_file(boxes, score_thresh=det_thresh or 0.0), "file",
                          str(boxes))
    if gt_boxes:
        return TableBoxes(load_gt_boxes(gt), "gt", str(gt))
    return detector_boxes(detector, detector_weights, 0.5 if det_thresh is None else det_thresh,
                          det_nms, pick_device(device), det_sizes)


def load_estimator(weights: str | os.PathLike | None, engine: EngineOptions | None = None,
                   device: str | None = None, min_instances: int = 1,
                   scorer: str | None = None) -> PoseEstimator:
    """A pose estimator from a checkpoint path, a zoo name or None (the shipped default with
    at least `min_instances` instances), on `device` (auto: CUDA when present). With
    `engine.rescore == "psm"`, the single-stage checkpoint `scorer` (default: the shipped
    one) scores the poses."""
    spec = None if weights is None else str(weights)
    psm = engine is not None and engine.rescore == "psm"
    if scorer is not None and not psm:
        raise MipnetError("--scorer scores poses with --rescore psm: add it, or leave out "
                          "--scorer")
    try:
        return PoseEstimator.from_checkpoint(
            resolve_pose_weights(spec, min_instances), engine, pick_device(device),
            resolve_scorer_weights(scorer) if psm else None)
    except ValueError as exc:
        raise MipnetError(str(exc)) from None


def _failure(path: Path, error: MipnetError) -> ImageFailure:
    """A failure record whose reason does not repeat the file name."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    prefix = f"{path}: "
    return ImageFailure(str(path), message[len(prefix):] if message.startswith(prefix) else message)


def _load(path: Path) -> np.ndarray | ImageFailure:
    try:
        return read_image(path)
    except MipnetError as exc:
        return _failure(path, exc)


def collect_inputs(inputs: Sequence[str | os.PathLike], recursive: bool = False
                   ) -> tuple[list[Path], list[ImageFailure]]:
    """Image files from CLI arguments (see `expand_inputs`), and a failure for each argument
    that gives none (a missing file, a pattern without a match, a folder without images).
    Files reached twice are listed once."""
    files: dict[Path, Path] = {}
    failures: list[ImageFailure] = []
    for item in inputs:
        try:
            found = expand_inputs([item], recursive=recursive)
        except MipnetError as exc:
            failures.append(_failure(Path(item), exc))
            continue
        for path in found:
            files.setdefault(path.resolve(), path)
    return list(files.values()), failures


class Annotator:
    """Poses for image files, batch by batch.

    Image ids: `image_ids` (file name -> id, from an annotation file) when given; else, with a
    box file, the number a COCO-style file name spells (000000000785.jpg -> 785); else the
    1-based position in the input list. An image that cannot be given an id is a failure.
    """

    def __init__(
        self,
        estimator: PoseEstimator,
        box_source: BoxSource,
        image_ids: dict[str, int] | None = None,
        ids_from: str = "the annotation file",
        images_per_batch: int = 8,
        readers: int = 4,
    ) -> None:
        if images_per_batch < 1 or readers < 1:
            raise ValueError("images_per_batch and readers must be at least 1")
        self.estimator = estimator
        self.box_source = box_source
        self.image_ids = image_ids
        self.ids_from = ids_from
        self.images_per_batch = images_per_batch
        self.readers = readers

    @classmethod
    def from_options(
        cls,
        weights: str | None = None,
        *,
        detector: str | None = None,
        detector_weights: str | os.PathLike | None = None,
        det_thresh: float | None = None,
        det_nms: float = 0.5,
        det_sizes: Sequence[int] | None = None,
        boxes: str | os.PathLike | None = None,
        gt: str | os.PathLike | None = None,
        engine: EngineOptions | None = None,
        device: str | None = None,
        images_per_batch: int = 8,
        scorer: str | None = None,
    ) -> Annotator:
        """Build from user settings.

        Boxes come from `boxes` (a COCO detection-results file; `det_thresh` defaults to 0
        there, as in the official evaluation), else from the ground truth `gt` unless a
        `detector` or `detector_weights` is named, else from a detector (see `detector_boxes`:
        torchvision's COCO Faster R-CNN, offline the shipped YOLOX-Nano; `det_thresh` 0.5).
        `gt` also gives the image ids. `weights=None` takes the shipped default pose model;
        `scorer` the single-stage checkpoint of `engine.rescore == "psm"` (see
        `load_estimator`).
        """
        torch_device = pick_device(device)
        estimator = load_estimator(weights, engine, str(torch_device), scorer=scorer)
        source = box_source(boxes=boxes, gt=gt, detector=detector,
                            detector_weights=detector_weights, det_thresh=det_thresh,
                            det_nms=det_nms, det_sizes=det_sizes, device=torch_device,
                            whole_image=estimator.model.whole_image)
        ids = image_ids_by_filename(gt) if gt is not None else None
        return cls(estimator, source, ids, ids_from=str(gt), images_per_batch=images_per_batch)

    def assign_ids(self, paths: Sequence[Path]) -> list[int | ImageFailure]:
        """The image id of each path, or why it has none."""
        out: list[int | ImageFailure] = []
        owner: dict[int, Path] = {}
        for index, path in enumerate(paths):
            image_id: int | ImageFailure
            if self.image_ids is not None:
                found = self.image_ids.get(path.name)
                image_id = found if found is not None else ImageFailure(
                    str(path), f"not listed in {self.ids_from}")
            elif self.box_source.source == "file":
                image_id = int(path.stem) if path.stem.isdigit() else ImageFailure(
                    str(path), "cannot match it to the box file's image ids (its name is not "
                               "a number); pass --gt ANNOTATIONS.json to map names to ids")
            else:
                image_id = index + 1
            if isinstance(image_id, int):
                if image_id in owner:
                    image_id = ImageFailure(str(path), f"has the same image id ({image_id}) as "
                                                       f"{owner[image_id]}")
                else:
                    owner[image_id] = path
            out.append(image_id)
        return out

    def check_box_matches(self, paths: Sequence[Path]) -> str | None:
        """With a box table: how many of the images it has boxes for (MipnetError if none)."""
        if not isinstance(self.box_source, TableBoxes):
            return None
        ids = [i for i in self.assign_ids(paths) if isinstance(i, int)]
        return self.box_source.check_matches(ids)

    def run(self, paths: Sequence[str | os.PathLike]) -> Iterator[ImagePoses | ImageFailure]:
        """Poses (or a failure) for each path, in input order."""
        for item in self.run_with_images(paths):
            yield item[0] if isinstance(item, tuple) else item

    def run_with_images(self, paths: Sequence[str | os.PathLike]
                        ) -> Iterator[tuple[ImagePoses, np.ndarray] | ImageFailure]:
        """As `run`, with each result's RGB image (for drawing), in input order."""
        files = [Path(p) for p in paths]
        ids = self.assign_ids(files)
        todo = [i for i, v in enumerate(ids) if isinstance(v, int)]
        batches = [todo[s:s + self.images_per_batch]
                   for s in range(0, len(todo), self.images_per_batch)]
        ready: dict[int, tuple[ImagePoses, np.ndarray] | ImageFailure] = {
            i: v for i, v in enumerate(ids) if isinstance(v, ImageFailure)}
        next_out = 0
        with ThreadPoolExecutor(max_workers=self.readers) as pool:

            def read(k: int) -> list[Future]:
                return [pool.submit(_load, files[i]) for i in batches[k]] if k < len(batches) \
                    else []

            ahead = read(0)
            for k, batch in enumerate(batches):
                loaded = [f.result() for f in ahead]
                ahead = read(k + 1)  # the next batch is read while this one runs
                ready.update(self._annotate(batch, loaded, files, ids))
                while next_out in ready:
                    yield ready.pop(next_out)
                    next_out += 1
        for i in range(next_out, len(files)):
            yield ready.pop(i)

    def _annotate(self, batch: list[int], loaded: list[np.ndarray | ImageFailure],
                  files: list[Path], ids: list[int | ImageFailure]
                  ) -> dict[int, tuple[ImagePoses, np.ndarray] | ImageFailure]:
        """Boxes and poses for the readable images of one batch (one network pass)."""
        results: dict[int, tuple[ImagePoses, np.ndarray] | ImageFailure] = {}
        good = [(i, img) for i, img in zip(batch, loaded, strict=True)
                if not isinstance(img, ImageFailure)]
        for i, img in zip(batch, loaded, strict=True):
            if isinstance(img, ImageFailure):
                results[i] = img
        if not good:
            return results
        images = [img for _, img in good]
        image_ids = [int(ids[i]) for i, _ in good]  # type: ignore[arg-type]
        boxes = self.box_source.boxes(images, image_ids)
        poses = self.estimator.predict(images, boxes)
        for (i, img), image_id, b, p in zip(good, image_ids, boxes, poses, strict=True):
            results[i] = (ImagePoses(path=str(files[i]), width=img.shape[1],
                                     height=img.shape[0], image_id=image_id,
                                     boxes=person_boxes(b), poses=p),
                          img)
        return results
