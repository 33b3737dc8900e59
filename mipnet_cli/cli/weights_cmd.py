"""`mipnet weights`: list, pull, import, convert and inspect checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..checkpoints.convert import convert_file
from ..checkpoints.detector import DETECTOR_FORMAT, load_yolox, read_detector_meta
from ..checkpoints.format import import_checkpoint, load_checkpoint, save_checkpoint
from ..checkpoints.zoo import cache_dir, load_zoo, pull
from ..core.files import check_outputs
from ..models import count_parameters
from .app import MODELS, app, console, say

weights_app = typer.Typer(help="List, download, import and inspect checkpoints.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights", rich_help_panel=MODELS)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'256x192' (height x width) -> (256, 192)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected HEIGHTxWIDTH such as 256x192, got {text!r}") from None
    return h, w


@weights_app.command("list")
def list_weights() -> None:
    """Show the named checkpoints, where they come from and whether they are here."""
    table = Table(title=f"Model zoo (cache: {cache_dir()})")
    for col in ("name", "kind", "status", "source", "description"):
        table.add_column(col, overflow="fold")
    for e in load_zoo().values():
        source = e.file or e.url or e.torchvision or "manual (see `mipnet weights pull NAME`)"
        table.add_row(e.name, e.kind, e.status(), source, e.description)
    console.print(table)


@weights_app.command("pull")
def pull_weights(name: str = typer.Argument(..., help="a name from `mipnet weights list`")) -> None:
    """Download a named checkpoint into the cache, check its hash and convert it."""
    path = pull(name)
    say("ready:", "green", path, stderr=False)


@weights_app.command("import")
def import_weights(
    src: Path = typer.Argument(..., help="official MIPNet/HRNet or mmpose checkpoint (.pth)"),
    dst: Path = typer.Argument(..., help="output file in mipnet format (.safetensors)"),
    arch: str | None = typer.Option(None, help="require this architecture (default: infer)"),
    input_size: str | None = typer.Option(
        None, help="HEIGHTxWIDTH the model was trained at "
        "(default: from the file name, else 256x192)"),
    keypoints: str | None = typer.Option(None, help="keypoint set (default: from joint count)"),
) -> None:
    """Convert a foreign checkpoint into mipnet's format (architecture inferred from weights)."""
    check_outputs({"DST": dst}, inputs=[src])
    model, meta = import_checkpoint(src, arch=arch, image_size=parse_size(input_size),
                                    keypoints=keypoints)
    save_checkpoint(dst, model, meta.keypoints, meta.provenance)
    c = meta.config
    say(
        "wrote", "green", f"{dst}: {c.arch} {'x'.join(map(str, c.image_size))}, "
        f"{c.num_joints} joints ({meta.keypoints}), N={c.num_instances}, "
        f"{count_parameters(model) / 1e6:.2f} M parameters, "
        f"from {meta.provenance['source_format']}", stderr=False)


@weights_app.command("convert")
def convert_weights(
    src: Path = typer.Argument(..., help="published network: YOLOX .onnx, or MoveNet "
                                         "SinglePose TF.js model .json (its .bin beside it)"),
    out: Path = typer.Argument(..., help="output file in mipnet format (.safetensors)"),
    half: bool = typer.Option(False, help="store float16 weights (exact for MoveNet, whose "
                                          "published weights are float16)"),
) -> None:
    """Convert a published real network into mipnet's format (weights read with our own
    readers, no TensorFlow or ONNX runtime), recording the source's sha256 and licence."""
    check_outputs({"OUT": out}, inputs=[src])
    done = convert_file(src, out, half=half)
    say("wrote", "green", f"{done.path}: {done.kind} {done.arch} from "
        f"{done.provenance['source_file']} ({done.provenance['licence']})", stderr=False)


@weights_app.command("info")
def weights_info(path: Path = typer.Argument(..., help="a checkpoint file")) -> None:
    """Print a checkpoint's architecture, keypoint set and provenance."""
    if read_detector_meta(path).get("format") == DETECTOR_FORMAT:
        detector, provenance = load_yolox(path)
        table = Table(show_header=False, title=str(path))
        d = detector.config
        rows = {"architecture": f"YOLOX detector (width {d.width}, depth {d.depth})",
                "input size (h×w)": "×".join(map(str, d.input_size)),
                "classes": f"{d.num_classes} (person boxes kept)",
                "parameters": f"{count_parameters(detector) / 1e6:.3f} M"}
        rows.update({f"provenance: {k}": str(v) for k, v in provenance.items()})
        for k, v in rows.items():
            table.add_row(k, v)
        console.print(table)
        return
    model, meta = load_checkpoint(path)
    table = Table(show_header=False, title=str(path))
    c = meta.config
    rows = {
        "architecture": f"{c.name or c.arch} ({c.arch})",
        "input size (h×w)": "×".join(map(str, c.image_size)),
        "instances (N)": str(c.num_instances),
        "keypoints": f"{meta.keypoints} ({c.num_joints} joints)",
        "parameters": f"{count_parameters(model) / 1e6:.3f} M",
    }
    rows.update({f"provenance: {k}": str(v) for k, v in meta.provenance.items()})
    for k, v in rows.items():
        table.add_row(k, v)
    console.print(table)
