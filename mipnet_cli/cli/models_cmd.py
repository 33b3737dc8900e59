"""`mipnet models`: the architectures and the known checkpoints."""

from __future__ import annotations

import torch
from rich.table import Table

from ..checkpoints.zoo import load_zoo
from ..models import ARCHITECTURES, build_model, count_parameters
from .app import MODELS, app, console


def _params_millions(name: str, instances: int) -> float:
    with torch.device("meta"):
        return count_parameters(build_model(name, num_instances=instances)) / 1e6


@app.command(rich_help_panel=MODELS)
def models() -> None:
    """List the pose architectures (with parameter counts) and the known checkpoints."""
    table = Table(title="Architectures (`--arch` in `mipnet train`): parameters of the plain "
                        "network, of MIPNet with N=2 and the MIMBs' share")
    # Names and figures stay whole (a name is what `--arch` takes); the notes fold.
    for col in ("name", "input", "params", "N=2", "+MIMB"):
        table.add_column(col, justify="left" if col in ("name", "input") else "right",
                         no_wrap=True)
    table.add_column("notes", overflow="fold")
    for name, (config, notes) in ARCHITECTURES.items():
        single, multi = _params_millions(name, 1), _params_millions(name, 2)
        h, w = config.image_size
        mimb = multi != single  # single-stage networks have no instance selector
        table.add_row(name, f"{h}×{w}", f"{single:.1f} M", f"{multi:.1f} M" if mimb else "-",
                      f"{100 * (multi / single - 1):+.2f} %" if mimb else "-", notes)
    console.print(table)

    zoo = Table(title="Checkpoints (`mipnet weights list` for details)")
    zoo.add_column("name", no_wrap=True)
    for col in ("kind", "arch", "N", "input", "status"):
        zoo.add_column(col, overflow="fold")
    for e in load_zoo().values():
        pose = e.kind == "pose"
        zoo.add_row(e.name, e.kind, e.arch or e.builder or "-", str(e.instances) if pose else "-",
                    "×".join(map(str, e.input_size)) if e.input_size else "-", e.status())
    console.print(zoo)
