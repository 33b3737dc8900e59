"""Command-line interface: a thin Typer layer over the mipnet_cli Python API.

Each command group lives in its own module and registers itself on `app` when imported.
"""

from . import (  # noqa: F401  (registers commands)
    bench_cmd,
    detector_cmd,
    inspect_cmd,
    models_cmd,
    predict_cmd,
    synth_cmd,
    train_cmd,
    video_cmd,
    weights_cmd,
)
from .app import app, main, run_app

__all__ = ["app", "main", "run_app"]
