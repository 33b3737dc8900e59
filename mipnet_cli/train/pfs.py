"""Training the single-stage pose regression network (`mipnet train` with a "pfs" arch).

The backbone and neck start from a converted YOLOX detector (COCO-trained features) or from a
single-stage checkpoint; the P6/P7 convolutions and the heads start fresh. Whole images go in
(`data.scenes.SceneDataset`); `pfs_loss` gives the loss. Validation runs the model as
`mipnet predict` does (whole image, flip test) and scores the results with pycocotools.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from ..checkpoints.format import read_meta
from ..core.errors import MipnetError
from ..core.hardware import pick_device
from ..core.keypoints import get_keypoint_set
from ..data.scenes import SceneAugment, SceneDataset
from ..evaluate.coco import operating_point
from ..evaluate.predictions import predict_scenes, score_results
from ..models import build_model
from ..models.pfs import PfsPoseNet, yolox_init
from ..models.pfs_loss import LossSettings, pfs_loss
from ..pose.engine import EngineOptions, PoseEstimator
from .base import DataPaths, PoseRunTrainer, config_arch, read_settings


@dataclass
class PfsTrainConfig(DataPaths):
    """A single-stage training run; TOML files and `--set key=value` fill it."""

    keypoints: str | None = None
    arch: str = "pfs_yolox_nano"
    input_size: tuple[int, int] = (320, 320)
    init: str | None = None  # a YOLOX detector checkpoint or a single-stage checkpoint
    feature_align: bool = True
    center_sampling: bool = True
    heatmap: bool = True
    quality: str = "psm"  # "psm" | "centerness" | "none"
    oks_filter: float = 0.3
    epochs: int = 12
    batch_size: int = 8
    lr: float = 1e-3
    backbone_lr_factor: float = 0.1  # the pretrained backbone + neck learn at lr × this
    lr_steps: tuple[int, ...] = (9, 11)
    lr_factor: float = 0.1
    weight_decay: float = 1e-4
    grad_clip: float | None = 10.0
    workers: int = 2
    seed: int = 0
    val_every: int = 1
    flip_test: bool = True
    max_steps_per_epoch: int | None = None
    out_dir: str = "runs/pfs"
    augment: dict[str, Any] = field(default_factory=dict)  # SceneAugment fields
    config_file: str | None = None

    PATHS: ClassVar[tuple[str, ...]] = ("train_ann", "train_images", "val_ann", "val_images",
                                        "init", "out_dir")

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> PfsTrainConfig:
        values = read_settings(cls, path, overrides, paths=cls.PATHS,
                               tuples=("input_size", "lr_steps"), tables=("augment",))
        config = cls(**values)
        if config.quality not in ("psm", "centerness", "none"):
            raise MipnetError(f"quality {config.quality!r}: expected psm, centerness or none")
        return config

    @property
    def loss(self) -> LossSettings:
        return LossSettings(center_sampling=self.center_sampling, heatmap=self.heatmap,
                            quality=self.quality, oks_filter=self.oks_filter)


def _collate(batch):
    images, people, boxes, areas, counts = zip(*batch, strict=True)
    return (torch.stack(images), torch.stack(people), torch.stack(boxes), torch.stack(areas),
            list(counts))


def initialise_pfs(model: PfsPoseNet, path: str | Path) -> str:
    """Load a YOLOX detector's backbone + neck, or a whole single-stage checkpoint whose
    tensors match; a line saying what was loaded."""
    path = Path(path)
    if not path.is_file():
        raise MipnetError(f"{path}: initialisation checkpoint not found")
    state = load_file(str(path))
    if any(k.startswith("head.") for k in state):  # a YOLOX detector
        return f"backbone + neck ({yolox_init(model, state)} tensors) from {path.name}"
    read_meta(path)
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return f"{len(matched)} of {len(own)} tensors from {path.name}"


class PfsTrainer(PoseRunTrainer):
    """One run in `config.out_dir`: last/best.safetensors, state.pt, log.jsonl, curves.png."""

    def __init__(self, config: PfsTrainConfig, device: str | None = None) -> None:
        super().__init__(config, pick_device(device))
        size = tuple(config.input_size)
        if size[0] != size[1]:
            raise MipnetError(f"input_size {size}: the single-stage network takes square input")
        kps = get_keypoint_set(config.keypoints) if config.keypoints else None
        self.train_set = SceneDataset(config.train_ann, config.train_images, size[0], kps,
                                      train=True, augment=SceneAugment(**config.augment),
                                      seed=config.seed)
        self.keypoints = self.train_set.keypoint_set
        self.model = build_model(config.arch, image_size=size,
                                 num_joints=self.keypoints.num_joints,
                                 feature_align=config.feature_align,
                                 quality_score=config.quality != "none").to(self.device)
        if not isinstance(self.model, PfsPoseNet):
            raise MipnetError(f"{config.arch} is not a single-stage architecture")
        self.init_report = initialise_pfs(self.model, config.init) if config.init \
            else None
        backbone = [p for n, p in self.model.named_parameters() if n.startswith("neck.")]
        heads = [p for n, p in self.model.named_parameters() if not n.startswith("neck.")]
        self.optimizer = torch.optim.AdamW(
            [{"params": backbone, "lr": config.lr * config.backbone_lr_factor},
             {"params": heads, "lr": config.lr}], weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(config.lr_steps), gamma=config.lr_factor)
        self.sigmas = torch.as_tensor(np.asarray(self.keypoints.sigmas_array, np.float32),
                                      device=self.device)

    def extra_state(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_extra(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])

    def provenance(self) -> dict[str, Any]:
        return self.base_provenance("mipnet train") | {"best_val": self.best,
                                                       "quality": self.config.quality}

    def train_epoch(self, progress=None, stop_after: int | None = None) -> dict:
        c = self.config
        torch.manual_seed(c.seed * 100_003 + self.epoch)
        self.train_set.epoch = self.epoch
        self.model.train()
        g = torch.Generator().manual_seed(c.seed * 100_003 + self.epoch)
        loader = DataLoader(self.train_set, batch_size=c.batch_size, shuffle=True,
                            num_workers=c.workers, generator=g, collate_fn=_collate)
        steps, task = self.epoch_steps(len(loader), progress)
        sums: dict[str, float] = {}
        count, start = 0, time.perf_counter()
        for step, (images, people, boxes, areas, counts) in enumerate(loader):
            if step >= steps:
                break
            if stop_after is not None and step >= stop_after:
                raise KeyboardInterrupt
            x = images.to(self.device).float()
            out = self.model.train_outputs(x)
            loss, terms = pfs_loss(out, people.to(self.device), boxes.to(self.device),
                                          areas.to(self.device), counts, self.sigmas, c.loss)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v * len(x)
            sums["loss"] = sums.get("loss", 0.0) + loss.item() * len(x)
            count += len(x)
            if progress:
                progress.update(task, advance=1, loss=sums["loss"] / count,
                                rate=count / max(time.perf_counter() - start, 1e-9))
        self.scheduler.step()
        elapsed = time.perf_counter() - start
        self.train_time += elapsed
        self.epoch += 1
        return {"epoch": self.epoch, **{k: v / max(count, 1) for k, v in sums.items()},
                "lr": self.optimizer.param_groups[1]["lr"], "samples_per_s": count / elapsed,
                "time_s": round(elapsed, 2)}

    def estimator(self) -> PoseEstimator:
        return PoseEstimator(self.model, self.keypoints,
                             EngineOptions(flip_test=self.config.flip_test), self.device)

    def validate(self, progress=None) -> dict:
        c = self.config
        results = predict_scenes(self.estimator(), c.val_ann, c.val_images or c.train_images,
                                 progress=progress)
        metrics = score_results(c.val_ann, results, self.keypoints)
        point = operating_point(c.val_ann, results, self.keypoints)
        if point is not None:  # the checkpoint draws joints from its F1-best pose score
            self.model.config = replace(self.model.config,
                                        kpt_thresh=round(point["threshold"], 3))
        self.model.train()
        return {"merged": {k: v for k, v in metrics.items() if k != "log"},
                "operating_point": point}


def is_pfs_config(path: str | Path | None, overrides: list[str]) -> bool:
    """Whether a training config names a single-stage architecture (an unreadable config is
    not; its own loader reports why)."""
    from ..models.registry import ARCHITECTURES

    entry = ARCHITECTURES.get(config_arch(path, overrides) or "")
    return entry is not None and entry[0].arch == "pfs"
