"""Command-line interface: a thin Typer layer over the mipnet_cli Python API.

Each command group lives in its own module and registers itself on `app` when imported; the
import order is the order of `mipnet --help`.
"""

# isort: off
from . import predict_cmd, video_cmd  # noqa: F401  (registers commands)
from . import inspect_cmd  # noqa: F401
from . import train_cmd, detector_cmd, synth_cmd  # noqa: F401
from . import models_cmd, weights_cmd, bench_cmd  # noqa: F401
from .app import app, main, run_app

# isort: on

__all__ = ["app", "main", "run_app"]
