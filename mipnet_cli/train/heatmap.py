"""Training: the MIPNet multi-instance loss, checkpoints every epoch, exact resume, DDP.

One process per GPU under `torchrun` (DistributedDataParallel with a distributed sampler),
a single process otherwise. Randomness is re-seeded from (seed, epoch) at the start of every
epoch, so a run resumed from the checkpoint of epoch e reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoints.format import (
    load_checkpoint,
    read_foreign_state_dict,
    read_meta,
    save_checkpoint,
)
from ..core.errors import MipnetError
from ..core.files import atomic_path
from ..core.hardware import autocast_dtype, cpu_model, pick_device
from ..data import AugmentConfig, KeypointDataset
from ..evaluate.predictions import evaluate_predictions, predict_dataset
from ..models import MIMB, PoseNet, build_model, instance_lambdas
from ..pose.engine import EngineOptions, PoseEstimator


@dataclass
class DataPaths:
    """The data every training run names: COCO-format annotation files and image folders."""

    train_ann: str = ""
    train_images: str = ""
    val_ann: str | None = None
    val_images: str | None = None


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


def portable_settings(config: Any) -> dict[str, Any]:
    """A run's settings for a checkpoint's provenance: path settings relative to the config
    file's folder (or to the working directory without a file), never this machine's
    absolute paths."""
    values = asdict(config)
    base = Path(config.config_file).parent if config.config_file else Path.cwd()
    for key in (*config.PATHS, "config_file"):
        if values.get(key) and Path(values[key]).is_absolute():
            values[key] = os.path.relpath(values[key], base.resolve())
    if config.config_file:
        values["config_file"] = Path(config.config_file).name
    return values


def toml_settings(path: str | Path, tables: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of a TOML config file: its sections only group them, except `tables`,
    which are settings themselves."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MipnetError(f"{path}: cannot read training config ({exc})") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key not in tables:
            values.update(value)
        else:
            values[key] = value
    return values


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` -> (key, value): the value as TOML reads it, else the text itself."""
    key, sep, text = item.partition("=")
    if not sep:
        raise MipnetError(f"override {item!r} is not key=value")
    try:
        return key.strip(), tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), text


def read_settings(cls: type, path: str | Path | None, overrides: list[str], paths: tuple[str, ...],
                  tuples: tuple[str, ...] = (), tables: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of dataclass `cls` from a TOML file and `key=value` overrides.

    TOML sections only group settings, except the `tables`, which are settings themselves.
    Relative `paths` in the file are relative to the file; `tuples` become tuples. The
    config must name train_ann and train_images.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = toml_settings(path, tables)
        base = Path(path).parent
        for key in paths:
            if values.get(key) and not Path(values[key]).is_absolute():
                values[key] = str((base / values[key]).resolve())
        values["config_file"] = str(Path(path).resolve())
    values.update(parse_override(item) for item in overrides)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise MipnetError(f"unknown training settings: {', '.join(unknown)}")
    for key in tuples:
        if key in values:
            values[key] = tuple(values[key])
    if not values.get("train_ann") or not values.get("train_images"):
        raise MipnetError("the training config needs train_ann and train_images")
    return values


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


def hardware_summary(device: torch.device, amp_dtype: torch.dtype | None) -> str:
    """Where and in what precision the run trains, for the checkpoint's provenance."""
    precision = {torch.float16: "fp16 mixed", torch.bfloat16: "bf16 mixed"}.get(amp_dtype, "fp32")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), {precision}"
    threads = torch.get_num_threads()
    return f"CPU {cpu_model()}, {threads} thread{'' if threads == 1 else 's'}, {precision}"


class EpochTrainer:
    """What the pose and detector trainers share: a run folder with state.pt (exact resume)
    and log.jsonl, the epoch loop, periodic validation and best-checkpoint tracking.

    Subclasses call `__init__` with their config (with epochs, val_every, out_dir, seed) and
    device, set model and optimizer, and define train_epoch, validate, score and save_weights.
    """

    rank = 0  # only rank 0 validates and writes

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.out = Path(config.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.epoch = 0
        self.best = float("-inf")
        self.history: list[dict] = []
        self.train_time = 0.0
        torch.manual_seed(config.seed)

    def base_provenance(self, trained_with: str, amp_dtype: torch.dtype | None = None
                        ) -> dict[str, Any]:
        """What every checkpoint says about the run that made it."""
        c = self.config
        return {"trained_with": trained_with, "train_ann": Path(c.train_ann).name,
                "epochs": self.epoch, "batch_size": c.batch_size, "lr": c.lr, "seed": c.seed,
                "hardware": hardware_summary(self.device, amp_dtype),
                "train_time_s": round(self.train_time, 1), "torch": str(torch.__version__),
                "date": time.strftime("%Y-%m-%d"), "config": portable_settings(c)}

    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    def extra_state(self) -> dict[str, Any]:
        """More state to save (tensors, numbers or state dicts), restored by `load_extra`."""
        return {}

    def load_extra(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` saved."""

    def save_state(self) -> None:
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "best": self.best, "history": json.dumps(self.history),
            "train_time": self.train_time, "config": json.dumps(asdict(self.config)),
            **self.extra_state(),
        }
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def resume(self) -> None:
        """Continue from state.pt: weights, optimizer, epoch, history and the subclass's state."""
        if not self.state_path.is_file():
            raise MipnetError(f"{self.state_path}: nothing to resume from")
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.best = int(state["epoch"]), float(state["best"])
        self.history = json.loads(state["history"])
        self.train_time = float(state["train_time"])
        self.load_extra(state)

    def epoch_steps(self, batches: int, progress=None) -> tuple[int, Any]:
        """The steps this epoch takes (`max_steps_per_epoch` caps the loader's `batches`) and
        its progress-bar task (None without `progress`)."""
        c = self.config
        steps = batches if c.max_steps_per_epoch is None else min(batches,
                                                                 c.max_steps_per_epoch)
        task = progress.add_task(f"epoch {self.epoch + 1}/{c.epochs}", total=steps,
                                 loss=float("nan"), rate=0.0) if progress else None
        return steps, task

    def train_epoch(self, progress=None, stop_after: int | None = None) -> dict:
        raise NotImplementedError

    def validate(self) -> dict:
        raise NotImplementedError

    def score(self, record: dict) -> float | None:
        """The number that picks best checkpoint (higher is better; None: not comparable)."""
        raise NotImplementedError

    def save_weights(self, best: bool) -> None:
        """Write the last checkpoint, and the best one too when `best`."""
        raise NotImplementedError

    def fit(self, progress=None, stop_after: tuple[int, int] | None = None) -> list[dict]:
        """Train to `config.epochs`, validating every `val_every` epochs and after the last,
        writing checkpoints, state and the log after every epoch.

        `stop_after=(epoch, steps)` interrupts that epoch after `steps` steps (tests).
        """
        c = self.config
        if self.epoch == 0 and self.rank == 0:  # a fresh run starts a fresh log
            (self.out / "log.jsonl").unlink(missing_ok=True)
        while self.epoch < c.epochs:
            stop = stop_after[1] if stop_after and stop_after[0] == self.epoch else None
            record = self.train_epoch(progress, stop_after=stop)
            if self.rank == 0:
                if c.val_ann and (self.epoch % c.val_every == 0 or self.epoch == c.epochs):
                    record["val"] = self.validate()
                self.history.append(record)
                self.write_epoch(record)
        return self.history

    def write_epoch(self, record: dict) -> None:
        metric = self.score(record)
        improved = metric is not None and metric > self.best
        if improved:
            self.best = metric
        self.save_weights(improved)
        self.save_state()
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class PoseRunTrainer(EpochTrainer):
    """A trainer of pose networks (top-down or single-stage): picks the best checkpoint by the
    merged validation AP and writes mipnet checkpoints and curves.png. Subclasses set
    `keypoints` and define `provenance`."""

    def score(self, record: dict) -> float:
        return record["val"]["merged"]["AP"] if "val" in record else -record["loss"]

    def save_weights(self, best: bool) -> None:
        provenance = self.provenance()
        for name in ("last", "best") if best else ("last",):
            save_checkpoint(self.out / f"{name}.safetensors", self.model, self.keypoints.name,
                            provenance)
        plot_curves(self.history, self.out / "curves.png")


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


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss (and validation AP when present) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(epochs, [r["loss"] for r in history], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    ax.set_yscale("log")
    val = [(r["epoch"], r["val"]["merged"]["AP"]) for r in history if "val" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), "s-", color="tab:orange", label="val AP")
        ax2.set_ylabel("AP (merged)", color="tab:orange")
        ax2.set_ylim(0, 1)
    ax.set_title("mipnet train")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)

