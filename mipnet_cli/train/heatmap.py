"""Training: the MIPNet multi-instance loss, checkpoints every epoch, exact resume, DDP.

One process per GPU under `torchrun` (DistributedDataParallel with a distributed sampler),
a single process otherwise. Randomness is re-seeded from (seed, epoch) at the start of every
epoch, so a run resumed from the checkpoint of epoch e reproduces the uninterrupted run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoints.format import (
    load_checkpoint,
    read_foreign_state_dict,
    read_meta,
)
from ..core.errors import MipnetError
from ..core.hardware import autocast_dtype, pick_device
from ..data import AugmentConfig, KeypointDataset
from ..evaluate.predictions import evaluate_predictions, predict_dataset
from ..models import MIMB, PoseNet, build_model, instance_lambdas
from ..pose.engine import EngineOptions, PoseEstimator
from .base import DataPaths, PoseRunTrainer, read_settings


@dataclass
class TrainConfig(DataPaths):
    """Everything a training run needs; TOML files and `--set key=value` fill it."""

    val_boxes: str | None = None
    keypoints: str | None = None  # default: from the annotation file's joint count
    arch: str = "hrnet_w32"
    instances: int = 2
    input_size: tuple[int, int] = (256, 192)  # height, width
    init: str | None = None  # ImageNet or pose checkpoint; MIMBs start fresh
    epochs: int = 210
    batch_size: int = 32
    lr: float = 1e-3
    lr_steps: tuple[int, ...] = (170, 200)
    lr_factor: float = 0.1
    mimb_lr_factor: float = 1.0  # the MIMBs' learning rate is lr × this (fresh on a pretrained net)
    se_modules: tuple[bool, ...] | None = None  # where MIMBs sit (default: the arch's own)
    train_only: tuple[str, ...] = ()  # parameter-name prefixes that learn; the rest is frozen
    teacher: str | None = None  # frozen single-instance checkpoint whose outputs the loss uses
    weight_decay: float = 0.0
    grad_clip: float | None = None
    amp: bool = True  # mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16
    sigma: float = 2.0
    workers: int = 4
    seed: int = 0
    val_every: int = 1
    flip_test: bool = True
    max_steps_per_epoch: int | None = None
    out_dir: str = "runs/train"
    augment: dict[str, Any] = field(default_factory=dict)  # AugmentConfig fields
    config_file: str | None = None  # the TOML file read (set by `load`)

    PATHS: ClassVar[tuple[str, ...]] = ("train_ann", "train_images", "val_ann", "val_images",
                                        "val_boxes", "init", "teacher", "out_dir")

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
        """Read a TOML file (sections are only for grouping) and apply `key=value` overrides."""
        values = read_settings(cls, path, overrides, paths=cls.PATHS,
                               tuples=("input_size", "lr_steps", "train_only", "se_modules"),
                               tables=("augment",))
        return cls(**values)


class _AllInstances(nn.Module):
    """Runs every λ in one forward so DistributedDataParallel sees the whole computation."""

    def __init__(self, model: PoseNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, lams: torch.Tensor):
        return self.model.train_outputs(x, lams)


def initialise(model: PoseNet, path: str | Path) -> tuple[int, int, bool]:
    """Copy every tensor whose name and shape match (pose or ImageNet checkpoints).

    Returns (loaded, left fresh, whether every MIMB tensor was left fresh). MIMB layers of a
    single-instance checkpoint start fresh.
    """
    path = Path(path)
    if not path.is_file():
        raise MipnetError(f"{path}: initialisation checkpoint not found")
    try:
        read_meta(path)
        from safetensors.torch import load_file

        state = load_file(str(path))
    except MipnetError:
        state, _ = read_foreign_state_dict(path)
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise MipnetError(f"{path}: no tensor matches {model.config.name or model.config.arch}")
    model.load_state_dict(matched, strict=False)
    mimb_keys = [k for k in own if any(isinstance(m, MIMB) for m in _owners(model, k))]
    return (len(matched), len(own) - len(matched),
            bool(mimb_keys) and not any(k in matched for k in mimb_keys))


def _owners(model: nn.Module, key: str) -> list[nn.Module]:
    """The modules on the path of a state-dict key."""
    out, module = [], model
    for part in key.split(".")[:-1]:
        module = getattr(module, part)
        out.append(module)
    return out


class Trainer(PoseRunTrainer):
    """One training run in `config.out_dir`: last.safetensors, best.safetensors, state.pt,
    log.jsonl and curves.png."""

    def __init__(self, config: TrainConfig, device: str | None = None, console=None) -> None:
        self.console = console
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
            where = torch.device(f"cuda:{local}") if torch.cuda.is_available() else \
                torch.device("cpu")
            if where.type == "cuda":
                torch.cuda.set_device(where)
        else:
            where = pick_device(device)
        super().__init__(config, where)
        size = tuple(config.input_size)
        self.train_set = KeypointDataset(
            config.train_ann, config.train_images, image_size=size,
            heatmap_size=(size[0] // 4, size[1] // 4), sigma=config.sigma,
            num_instances=config.instances, train=True, augment=AugmentConfig(**config.augment))
        if config.keypoints and config.keypoints != self.train_set.keypoint_set.name:
            from ..core.keypoints import get_keypoint_set

            self.train_set.keypoint_set = get_keypoint_set(config.keypoints)
        self.keypoints = self.train_set.keypoint_set
        self.val_set = None
        if config.val_ann:
            self.val_set = KeypointDataset(
                config.val_ann, config.val_images or config.train_images, self.keypoints,
                image_size=size, heatmap_size=(size[0] // 4, size[1] // 4), num_instances=1,
                train=False, boxes=config.val_boxes)
        self.model = build_model(config.arch, num_instances=config.instances, image_size=size,
                                 se_modules=config.se_modules,
                                 num_joints=self.keypoints.num_joints).to(self.device)
        self.init_report = None
        if config.init:
            self.init_report = initialise(self.model, config.init)
            if self.init_report[2]:  # the checkpoint had no MIMBs: start them as the identity
                self.model.neutral_mimbs()
        self.teacher = None
        if config.teacher:
            self.teacher = load_checkpoint(config.teacher)[0].to(self.device)
            self.teacher.requires_grad_(False)
        self.net: nn.Module = _AllInstances(self.model)
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.lambdas = instance_lambdas(config.instances).to(self.device)
        self.optimizer = torch.optim.Adam(_param_groups(self.model, config),
                                          weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(config.lr_steps), gamma=config.lr_factor)
        self.amp_dtype = autocast_dtype(self.device) if config.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def extra_state(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_extra(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def provenance(self) -> dict:
        return self.base_provenance("mipnet train", self.amp_dtype) | {
            "processes": self.world, "best_val": self.best}

    # ------------------------------------------------------------------ loop
    def _loader(self, epoch: int) -> DataLoader:
        c = self.config
        g = torch.Generator().manual_seed(c.seed * 100_003 + epoch)
        sampler = None
        if self.world > 1:
            sampler = DistributedSampler(self.train_set, shuffle=True, seed=c.seed)
            sampler.set_epoch(epoch)
        return DataLoader(self.train_set, batch_size=c.batch_size, shuffle=sampler is None,
                          sampler=sampler, num_workers=c.workers, generator=g, drop_last=False,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def train_epoch(self, progress=None, stop_after: int | None = None) -> dict:
        """One epoch; `stop_after` aborts after that many steps (interruption tests)."""
        c = self.config
        torch.manual_seed(c.seed * 100_003 + self.epoch)
        self.net.train()
        loader = self._loader(self.epoch)
        steps, task = self.epoch_steps(len(loader), progress)
        total, count, start = 0.0, 0, time.perf_counter()
        for step, (images, targets, weights, meta) in enumerate(loader):
            if step >= steps:
                break
            if stop_after is not None and step >= stop_after:
                raise KeyboardInterrupt
            images = self.model.from_imagenet(images.to(self.device, non_blocking=True))
            targets = targets.to(self.device, non_blocking=True)
            weights = weights.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype,
                                enabled=self.amp_dtype is not None):
                outputs = self.net(images, self.lambdas)
            extra = {k: meta[k].to(self.device) for k in (
                "joints", "joints_vis", "context_joints", "context_vis", "fallback")}
            if self.teacher is not None:
                with torch.no_grad():
                    extra["teacher"] = self.teacher.train_outputs(images, self.lambdas[:1])
            loss = self.model.train_loss(outputs, targets, weights, extra)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if c.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.item() * len(images)
            count += len(images)
            if progress:
                rate = count / max(time.perf_counter() - start, 1e-9)
                progress.update(task, advance=1, loss=total / count, rate=rate)
        self.scheduler.step()
        elapsed = time.perf_counter() - start
        self.train_time += elapsed
        self.epoch += 1
        return {"epoch": self.epoch, "loss": total / max(count, 1),
                "lr": self.optimizer.param_groups[0]["lr"], "samples_per_s": count / elapsed,
                "time_s": round(elapsed, 2)}

    def validate(self, progress=None) -> dict:
        est = PoseEstimator(self.model, self.keypoints,
                            EngineOptions(flip_test=self.config.flip_test), self.device)
        preds = predict_dataset(est, self.val_set, self.config.batch_size, progress=progress)
        metrics = evaluate_predictions(preds, est, self.val_set, per_instance=True)
        self.model.train()
        return {name: {k: v for k, v in m.items() if k != "log"} for name, m in metrics.items()}

    def fit(self, progress=None, stop_after: tuple[int, int] | None = None) -> list[dict]:
        history = super().fit(progress, stop_after)
        if self.world > 1:
            torch.distributed.destroy_process_group()
        return history


def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Two Adam groups: the MIMBs at lr × mimb_lr_factor, everything else at lr; with
    `train_only`, the parameters outside those prefixes are frozen and left out."""
    if config.train_only:
        chosen = [n for n, _ in model.named_parameters() if n.startswith(config.train_only)]
        if not chosen:
            raise MipnetError(f"train_only {list(config.train_only)}: no parameter of "
                              f"{config.arch} has such a name")
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(config.train_only))
    mimb = {id(p) for m in model.modules() if isinstance(m, MIMB) for p in m.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in mimb], "lr": config.lr}]
    if mimb:
        groups.append({"params": [p for p in params if id(p) in mimb],
                       "lr": config.lr * config.mimb_lr_factor})
    return groups


