"""Training a person detector on COCO person boxes, and its box AP (pycocotools `bbox`).

Single process, CPU or one GPU. Like the pose trainer: a TOML config with `key=value`
overrides, checkpoints after every epoch (last.pt, best.pt: `PersonDetector` files), state.pt
for an exact resume and log.jsonl. Randomness is re-seeded from (seed, epoch) at the start of
every epoch, so a run resumed from the state of epoch e reproduces the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.errors import MipnetError
from ..core.hardware import pick_device
from ..data.dataset import load_coco_json, person_category_ids
from ..detect.person_rcnn import SMALL_PERSON_DETECTOR
from ..detect.torchvision_detectors import PersonDetector
from ..detect.yolox import YoloxPersonDetector
from ..media.images import read_image
from .base import DataPaths, EpochTrainer, read_settings

Target = dict[str, torch.Tensor]


@dataclass
class DetectorTrainConfig(DataPaths):
    """A detector training run; TOML files and `--set key=value` fill it."""

    detector: str = SMALL_PERSON_DETECTOR
    epochs: int = 5
    batch_size: int = 8
    lr: float = 2e-3  # AdamW
    lr_steps: tuple[int, ...] = (4,)  # epochs after which the learning rate drops
    lr_factor: float = 0.1
    warmup_steps: int = 100  # linear ramp of the learning rate over the first steps
    weight_decay: float = 1e-4
    grad_clip: float | None = 10.0
    flip_prob: float = 0.5
    # Shorter image side while training, one drawn per batch (scale jitter); evaluation and
    # inference use the detector's own size.
    train_sizes: tuple[int, ...] = (224, 240, 256, 272, 288)
    eval_score_thresh: float = 0.05
    workers: int = 0
    seed: int = 0
    val_every: int = 1
    max_steps_per_epoch: int | None = None
    out_dir: str = "runs/detector"
    config_file: str | None = None  # the TOML file read (set by `load`)

    PATHS: ClassVar[tuple[str, ...]] = ("train_ann", "train_images", "val_ann", "val_images",
                                        "out_dir")

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> DetectorTrainConfig:
        """Read a TOML file (sections are only for grouping) and apply `key=value` overrides."""
        values = read_settings(cls, path, overrides, paths=cls.PATHS,
                               tuples=("lr_steps", "train_sizes"))
        return cls(**values)


class PersonBoxes(Dataset):
    """Images with their person boxes (xyxy, label 1) from a COCO annotation file.

    Crowd regions, other categories and boxes of zero area are left out; boxes are clipped to
    the image. With `flip_prob`, images are mirrored at random (torch's global generator).
    """

    def __init__(self, ann: str | os.PathLike, images: str | os.PathLike,
                 flip_prob: float = 0.0) -> None:
        data = load_coco_json(ann)
        persons = person_category_ids(data)
        self.folder = Path(images)
        self.flip_prob = flip_prob
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.boxes: dict[int, list[list[float]]] = {im["id"]: [] for im in self.images}
        for ann_ in data["annotations"]:
            if (ann_.get("iscrowd", 0) or ann_.get("category_id") not in persons
                    or ann_.get("area", 1) <= 0 or ann_.get("image_id") not in self.boxes):
                continue
            x, y, w, h = ann_["bbox"]
            self.boxes[ann_["image_id"]].append([x, y, x + w, y + h])
        missing = [im["file_name"] for im in self.images
                   if not (self.folder / im["file_name"]).is_file()]
        if missing:
            raise MipnetError(f"{self.folder}: {len(missing)} listed images are missing "
                              f"(e.g. {missing[0]})")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        info = self.images[index]
        rgb = read_image(self.folder / info["file_name"])
        height, width = rgb.shape[:2]
        boxes = np.array(self.boxes[info["id"]], dtype=np.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
        if self.flip_prob and torch.rand(()).item() < self.flip_prob:
            rgb = rgb[:, ::-1]
            boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0],
                              boxes[:, 3]], axis=1)
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255)
        target = {"boxes": torch.from_numpy(np.ascontiguousarray(boxes)),
                  "labels": torch.ones(len(boxes), dtype=torch.int64)}
        return image, target


def _collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]


def detect_dataset(detector: PersonDetector | YoloxPersonDetector, ann: str | os.PathLike,
                   images: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Run `detector` on every image of a COCO annotation file, in batches of its batch size.

    Returns the loaded annotation data and the COCO detection results (image_id, the file's
    person category_id, bbox as x, y, w, h, score) for every box above the detector's
    threshold.
    """
    data = load_coco_json(ann)
    category = min(person_category_ids(data))
    folder = Path(images)
    entries = sorted(data["images"], key=lambda im: im["id"])
    results = []
    step = detector.batch_size
    for start in range(0, len(entries), step):
        chunk = entries[start:start + step]
        found = detector.detect([read_image(folder / im["file_name"]) for im in chunk])
        for im, boxes in zip(chunk, found, strict=True):
            for box in boxes:
                x0, y0, x1, y1 = (float(v) for v in box.xyxy)
                results.append({"image_id": im["id"], "category_id": category,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "score": box.score})
    return data, results


def evaluate_boxes(detector: PersonDetector | YoloxPersonDetector, ann: str | os.PathLike,
                   images: str | os.PathLike) -> dict[str, float]:
    """COCO box metrics of `detector` on the person boxes of an annotation file.

    AP (IoU .50:.95), AP50, AP75, APm, APl, AR100 (recall with up to 100 boxes, IoU .50:.95)
    and recall50 (at IoU .50); -1 where the split has no box of that size. The detector's own
    score threshold applies (COCO-style evaluation wants a low one, like 0.05).
    """
    return box_metrics(*detect_dataset(detector, ann, images))


def box_metrics(data: dict, results: list[dict]) -> dict[str, float]:
    """COCO person-box metrics of detection `results` against the annotations `data` (see
    `evaluate_boxes`)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category = min(person_category_ids(data))
    names = ("AP", "AP50", "AP75", "APm", "APl", "AR100", "recall50")
    if not results:
        return dict.fromkeys(names, 0.0)
    # Box area and crowd flag where a format leaves them out (CrowdPose has neither).
    annotations = [{"area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0, **a}
                   for a in data["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {**data, "annotations": annotations,
                      "categories": data.get("categories") or [{"id": category}]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.params.catIds = [category]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    s = evaluator.stats
    recall50 = float(evaluator.eval["recall"][0, 0, 0, -1])  # IoU .5, all areas, 100 boxes
    return dict(zip(names, (float(s[0]), float(s[1]), float(s[2]), float(s[4]), float(s[5]),
                            float(s[8]), recall50), strict=True))


class DetectorTrainer(EpochTrainer):
    """One detector training run in `config.out_dir`: last.pt, best.pt, state.pt, log.jsonl."""

    def __init__(self, config: DetectorTrainConfig, device: str | None = None) -> None:
        super().__init__(config, pick_device(device))
        self.train_set = PersonBoxes(config.train_ann, config.train_images, config.flip_prob)
        self.detector = PersonDetector(config.detector, weights=None, num_classes=2,
                                       score_thresh=config.eval_score_thresh,
                                       batch_size=config.batch_size, device=self.device)
        self.model = self.detector.model
        self.eval_size = self.model.transform.min_size[-1]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.step = 0

    def extra_state(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_extra(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    def learning_rate(self) -> float:
        """Warm-up, then the step schedule of `lr_steps` (epochs)."""
        c = self.config
        warm = min(1.0, (self.step + 1) / c.warmup_steps) if c.warmup_steps > 0 else 1.0
        drops = sum(self.epoch >= s for s in c.lr_steps)
        return c.lr * warm * c.lr_factor ** drops

    def provenance(self) -> dict[str, Any]:
        last_val = next((r["val"] for r in reversed(self.history) if "val" in r), None)
        return self.base_provenance("mipnet train-detector") | {
            "train_images": len(self.train_set), "steps": self.step, "val": last_val}

    def train_epoch(self, progress=None, stop_after: int | None = None) -> dict:
        """One epoch; `stop_after` aborts after that many steps (interruption tests)."""
        c = self.config
        torch.manual_seed(c.seed * 100_003 + self.epoch)
        self.model.train()
        self.model.transform.min_size = (*c.train_sizes, self.eval_size)
        g = torch.Generator().manual_seed(c.seed * 100_003 + self.epoch)
        loader = DataLoader(self.train_set, batch_size=c.batch_size, shuffle=True,
                            num_workers=c.workers, generator=g, collate_fn=_collate,
                            drop_last=len(self.train_set) > c.batch_size)
        steps, task = self.epoch_steps(len(loader), progress)
        sums: dict[str, float] = {}
        count, start = 0, time.perf_counter()
        for index, (images, targets) in enumerate(loader):
            if index >= steps:
                break
            if stop_after is not None and index >= stop_after:
                raise KeyboardInterrupt
            images = [im.to(self.device) for im in images]
            targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate()
            losses = self.model(images, targets)
            loss = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.optimizer.step()
            self.step += 1
            for name, value in (("loss", loss), *losses.items()):
                sums[name] = sums.get(name, 0.0) + value.item() * len(images)
            count += len(images)
            if progress:
                rate = count / max(time.perf_counter() - start, 1e-9)
                progress.update(task, advance=1, loss=sums["loss"] / count, rate=rate)
        elapsed = time.perf_counter() - start
        self.train_time += elapsed
        self.epoch += 1
        self.model.transform.min_size = (self.eval_size,)
        self.model.eval()
        return {"epoch": self.epoch, **{k: v / max(count, 1) for k, v in sums.items()},
                "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": count / elapsed,
                "time_s": round(elapsed, 2)}

    def validate(self) -> dict[str, float]:
        """Box metrics on the validation split (see `evaluate_boxes`)."""
        c = self.config
        self.model.eval()
        return evaluate_boxes(self.detector, c.val_ann, c.val_images or c.train_images)

    def score(self, record: dict) -> float | None:
        if "val" in record:
            return record["val"]["AP"]
        return None if self.config.val_ann else -record["loss"]

    def save_weights(self, best: bool) -> None:
        provenance = self.provenance()
        for name in ("last", "best") if best else ("last",):
            self.detector.save(self.out / f"{name}.pt", provenance)

    def export(self, path: str | os.PathLike, half: bool = True) -> Path:
        """Write the best checkpoint (else the last) to `path` (.safetensors: float16 there)."""
        source = self.out / "best.pt" if (self.out / "best.pt").is_file() else self.out / "last.pt"
        if not source.is_file():
            raise MipnetError(f"{self.out}: no checkpoint to export yet")
        best = PersonDetector(self.config.detector, weights_path=source)
        provenance = torch.load(source, map_location="cpu", weights_only=True)["provenance"]
        provenance["source"] = source.name
        best.save(path, provenance, half=half)
        return Path(path)
