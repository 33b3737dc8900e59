"""Detector checkpoints: YOLOX networks as safetensors files whose metadata names the builder
(`yolox_nano`), the network configuration and the provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import MipnetError
from ..core.files import atomic_path
from ..models.yolox import YOLOX, YoloxConfig

YOLOX_BUILDERS = {"yolox_nano": YoloxConfig(width=0.25, depth=0.33, depthwise=True),
                  "yolox_tiny": YoloxConfig(width=0.375, depth=0.33, depthwise=False)}


DETECTOR_FORMAT = "mipnet-detector"


def builder_for(config: YoloxConfig) -> str:
    for name, c in YOLOX_BUILDERS.items():
        if (c.width, c.depth, c.depthwise) == (config.width, config.depth, config.depthwise):
            return name
    return "yolox"


def save_yolox(path: str | os.PathLike, model: YOLOX, provenance: dict | None = None,
               half: bool = False) -> None:
    """Write a YOLOX detector checkpoint (weights + builder, config, provenance)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() for k, v in state.items()}
    meta = {"format": DETECTOR_FORMAT, "builder": builder_for(model.config),
            "config": json.dumps(model.config.to_dict()),
            "provenance": json.dumps(provenance or {})}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def read_detector_meta(path: str | os.PathLike) -> dict:
    """The metadata of a detector safetensors file ({} when it has none or is not one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # not safetensors: the caller decides what it is
        return {}


def load_yolox(path: str | os.PathLike) -> tuple[YOLOX, dict]:
    """A YOLOX detector and its provenance from one of our checkpoints."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MipnetError(f"{path}: detector weights file not found")
    meta = read_detector_meta(path)
    if meta.get("format") != DETECTOR_FORMAT or "config" not in meta:
        raise MipnetError(f"{path}: not a mipnet YOLOX detector checkpoint (convert the "
                          "original with `mipnet weights convert`)")
    try:
        config = YoloxConfig.from_dict(json.loads(meta["config"]))
        model = YOLOX(config)
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        model.load_state_dict(state, strict=True)
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        reason = str(exc).splitlines()[0]
        raise MipnetError(f"{path}: damaged YOLOX checkpoint ({reason})") from None
    return model.eval(), json.loads(meta.get("provenance", "{}"))
