"""What every trainer shares: run folders and data paths, TOML settings with --set overrides, the
epoch loop with resume and provenance (`EpochTrainer`), and the pose-run base that keeps the best
checkpoint by merged AP and draws the curves (`PoseRunTrainer`)."""

from __future__ import annotations

import json
import os
import time
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..checkpoints.format import (
    save_checkpoint,
)
from ..core.errors import MipnetError
from ..core.files import atomic_path
from ..core.hardware import cpu_model


@dataclass
class DataPaths:
    """The data every training run names: COCO-format annotation files and image folders."""

    train_ann: str = ""
    train_images: str = ""
    val_ann: str | None = None
    val_images: str | None = None


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


def config_arch(path: str | Path | None, overrides: list[str]) -> str | None:
    """The `arch` a training config (and its overrides) names; None when it names none or
    cannot be read (its own loader then reports why)."""
    try:
        values = toml_settings(path) if path is not None else {}
        values.update(parse_override(item) for item in overrides)
    except MipnetError:
        return None
    arch = values.get("arch")
    return None if arch is None else str(arch)


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
