"""`mipnet train-detector`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .app import TRAIN, app, console, say
from .train_cmd import _progress


@app.command("train-detector", rich_help_panel=TRAIN)
def train_detector(
    config: Path | None = typer.Argument(None, help="TOML config (configs/detector_synth.toml)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set lr=5e-4"),
    out: Path | None = typer.Option(None, help="run folder (default: the config's out_dir)"),
    epochs: int | None = typer.Option(None, help="number of epochs"),
    batch_size: int | None = typer.Option(None, help="images per step"),
    resume: bool = typer.Option(False, help="continue the run in the output folder exactly"),
    export: Path | None = typer.Option(
        None, help="at the end, write the best weights here (.safetensors: float16)"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: auto)"),
) -> None:
    """Train a person detector (Faster R-CNN) on the person boxes of a COCO-format dataset.

    Writes last.pt / best.pt (loadable with --detector NAME --detector-weights FILE), state.pt
    for --resume and log.jsonl to the run folder, and reports the box AP on the val split.
    """
    from ..train.detector import DetectorTrainConfig, DetectorTrainer

    overrides = list(set_)
    for key, value in (("out_dir", out), ("epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(str(value)) if key == 'out_dir' else value}")
    cfg = DetectorTrainConfig.load(config, overrides)
    trainer = DetectorTrainer(cfg, device=device)
    if resume:
        trainer.resume()
        console.print(f"resumed at epoch {trainer.epoch} from {trainer.state_path}")
    console.print(f"training {cfg.detector} on {len(trainer.train_set)} images on "
                  f"{trainer.device}")
    with _progress() as progress:
        history = trainer.fit(progress)
    val = next((r["val"] for r in reversed(history) if "val" in r), None)
    if val is not None:
        table = Table(title=f"person boxes, {Path(cfg.val_ann).name}")
        for name in val:
            table.add_column(name, justify="right")
        table.add_row(*(f"{v:.3f}" for v in val.values()))
        console.print(table)
    if history:
        say("done:", "green", f"epoch {history[-1]['epoch']}, loss "
            f"{history[-1]['loss']:.3f}; checkpoints in {trainer.out}", stderr=False)
    if export is not None:
        console.print(f"wrote {trainer.export(export)}")
