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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..checkpoints.format import load_checkpoint
from ..checkpoints.zoo import (
    resolve_pose_weights,
    resolve_recovery_weights,
    resolve_scorer_weights,
)
from ..core.errors import MipnetError
from ..core.hardware import pick_device
from ..core.results import ImagePoses, person_boxes
from ..detect.boxes import image_ids_by_filename
from ..detect.sources import BoxSource, TableBoxes, box_source
from ..media.images import expand_inputs, read_image
from ..pose.engine import EngineOptions, PoseEstimator
from ..pose.psm import PsmScorer


@dataclass
class ImageFailure:
    """An input file that produced no result, and why (one line)."""

    path: str
    reason: str


def load_estimator(weights: str | os.PathLike | None, engine: EngineOptions | None = None,
                   device: str | None = None, min_instances: int = 1,
                   scorer: str | None = None, recover: bool | None = None,
                   recover_weights: str | None = None) -> PoseEstimator:
    """A pose estimator from a checkpoint path, a zoo name or None (the shipped default with
    at least `min_instances` instances), on `device` (auto: CUDA when present). With
    `engine.rescore == "psm"`, the single-stage checkpoint `scorer` (default: one in the zoo,
    if any) scores the poses. With `recover` (None: for every top-down network), a whole-image
    network (`recover_weights`, default the shipped MoveNet MultiPose) also runs on each image
    and its poses are merged in (crowd recovery); `engine.input_size` and `max_people` then
    apply to it."""
    spec = None if weights is None else str(weights)
    engine = engine or EngineOptions()
    psm = engine.rescore == "psm"
    if scorer is not None and not psm:
        raise MipnetError("--scorer scores poses with --rescore psm: add it, or leave out "
                          "--scorer")
    if recover_weights is not None and recover is False:
        raise MipnetError("--recover-weights names the network of --recover: leave out "
                          "--no-recover, or --recover-weights")
    try:
        device = pick_device(device)
        model, meta = load_checkpoint(resolve_pose_weights(spec, min_instances))
        if recover is None:
            recover = not model.whole_image and min_instances <= 1
        psm_scorer = (PsmScorer.from_checkpoint(resolve_scorer_weights(scorer), device)
                      if psm else None)
        recovery = None
        if recover:
            recovery = PoseEstimator.from_checkpoint(
                resolve_recovery_weights(recover_weights),
                EngineOptions(flip_test=engine.flip_test, half=engine.half,
                              input_size=engine.input_size, max_people=engine.max_people),
                device)
            engine = replace(engine, input_size=None, max_people=None)
        return PoseEstimator(model, meta.keypoints, engine, device, psm_scorer, recovery)
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
        recover: bool | None = None,
        recover_weights: str | None = None,
    ) -> Annotator:
        """Build from user settings.

        Boxes come from `boxes` (a COCO detection-results file; `det_thresh` defaults to 0
        there, as in the official evaluation), else from the ground truth `gt` unless a
        `detector` or `detector_weights` is named, else from a detector (see `detector_boxes`:
        torchvision's COCO Faster R-CNN, offline the shipped YOLOX-Nano; `det_thresh` 0.5).
        `gt` also gives the image ids. `weights=None` takes the shipped default pose model;
        `scorer` the single-stage checkpoint of `engine.rescore == "psm"`, `recover` and
        `recover_weights` the crowd-recovery pass (see `load_estimator`).
        """
        torch_device = pick_device(device)
        estimator = load_estimator(weights, engine, str(torch_device), scorer=scorer,
                                   recover=recover, recover_weights=recover_weights)
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
