"""Our checkpoint format and importers for the official MIPNet, HRNet and mmpose files.

Our format is one safetensors file: the weights plus metadata strings that record the model
configuration, keypoint set and training provenance, so `load_checkpoint(path)` needs nothing
else. No loader here executes pickled code: safetensors, or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.errors import MipnetError, torch_load_message
from ..core.files import atomic_path
from ..core.keypoints import get_keypoint_set, keypoint_set_for
from ..models import ModelConfig, PoseNet, StageSpec, build_from_config, check_config
from ..models.resnet import RESNET_SPECS

FORMAT_TAG = "mipnet-checkpoint"
FORMAT_VERSION = "1"
STATE_DICT_KEYS = ("best_state_dict", "latest_state_dict", "state_dict", "model")


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself besides its weights."""

    config: ModelConfig
    keypoints: str = "coco"
    provenance: dict = field(default_factory=dict)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | Path, model: PoseNet, keypoints: str = "coco", provenance: dict | None = None,
    half: bool = False,
) -> None:
    """Write weights + metadata atomically in our safetensors format (`half`: floating-point
    tensors as float16, e.g. for networks published in float16; they load as float32)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    metadata = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "keypoints": keypoints,
        "provenance": json.dumps(provenance or {}),
    }
    with atomic_path(path, suffix=".tmp") as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of one of our checkpoints, without loading the weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise MipnetError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT_TAG:
        raise MipnetError(f"{path}: a safetensors file but not a mipnet checkpoint (no metadata)")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > int(FORMAT_VERSION):
        raise MipnetError(f"{path}: checkpoint format_version {version!r}; this mipnet reads "
                          f"versions up to {FORMAT_VERSION} (written by a newer mipnet?)")
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
        meta = CheckpointMeta(config, metadata.get("keypoints", "coco"),
                              json.loads(metadata.get("provenance", "{}")))
        check_meta(meta)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise MipnetError(f"{path}: bad mipnet checkpoint metadata ({exc})") from None
    return meta


def check_meta(meta: CheckpointMeta) -> None:
    """ValueError unless the metadata describes a buildable network whose joints are those of
    its keypoint set."""
    check_config(meta.config)
    kps = get_keypoint_set(meta.keypoints)
    if kps.num_joints != meta.config.num_joints:
        raise ValueError(f"keypoint set {kps.name} has {kps.num_joints} joints, the network "
                         f"{meta.config.num_joints}")
    if not isinstance(meta.provenance, dict):
        raise ValueError("provenance is not a JSON object")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Load a model from a checkpoint: ours, or an official/mmpose file (imported on the fly).

    Returns `(model, meta)`; the model is in eval mode.
    """
    path = Path(path)
    if not path.is_file():
        raise MipnetError(f"{path}: checkpoint file not found")
    if _is_safetensors(path):
        meta = read_meta(path)
        try:
            state = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError) as exc:
            raise MipnetError(f"{path}: cannot read weights ({exc})") from None
        model = build_from_config(meta.config)
        _load_strict(model, state, path)
    else:
        model, meta = import_checkpoint(path)
        model.to(map_location)
    return model.eval(), meta


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def _load_strict(model: PoseNet, state: dict, path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise MipnetError(f"{path}: weights do not fit the model: " + _describe_mismatch(
            missing, unexpected, wrong))
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise MipnetError(f"{path}: {len(broken)} weight tensors hold NaN or infinity (first: "
                          f"{broken[0]}); the checkpoint is damaged")
    model.load_state_dict(state, strict=True)


def _describe_mismatch(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    def few(items: list[str]) -> str:
        shown = ", ".join(items[:4])
        return shown + (f" and {len(items) - 4} more" if len(items) > 4 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({few(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} keys of the wrong shape ({few(wrong)})")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Importers


def read_foreign_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The pose-network state dict of an official MIPNet/HRNet or mmpose file, and its kind.

    Handles bare state dicts, dicts holding `best_state_dict` / `latest_state_dict` /
    `state_dict` / `model`, the DataParallel `module.` prefix and mmpose's `backbone.` /
    `keypoint_head.` / `head.` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise MipnetError(f"{path}: checkpoint file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise MipnetError(f"{path}: {torch_load_message(exc)}") from None
    if not isinstance(blob, dict):
        raise MipnetError(f"{path}: expected a state dict, found {type(blob).__name__}")
    source_key = None
    for key in STATE_DICT_KEYS:
        if isinstance(blob.get(key), dict):
            blob, source_key = blob[key], key
            break
    state = {k: v for k, v in blob.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise MipnetError(f"{path}: no tensors found (not a model checkpoint)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    kind = "official"
    if any(k.startswith("backbone.") for k in state):
        kind = "mmpose"
        renamed = {}
        for k, v in state.items():
            for prefix in ("backbone.", "keypoint_head.", "head."):
                if k.startswith(prefix):
                    renamed[k[len(prefix):]] = v
                    break
        state = renamed
    if source_key:
        kind += f":{source_key}"
    return state, kind


def _indices(state: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def infer_config(
    state: dict[str, torch.Tensor], image_size: tuple[int, int] = (256, 192)
) -> ModelConfig:
    """Rebuild the model configuration from parameter names and shapes alone.

    The input size is not stored in weights, so it is an argument (official files: 256x192 or
    384x288).
    """
    if "final_layer.weight" not in state:
        raise ValueError("no final_layer.weight: not a top-down heatmap pose network")
    final = state["final_layer.weight"]
    se_layers = [k for k in state if "_se.se_layers." in k]
    lambda_dim = 2
    if se_layers:
        lambda_dim = next(v.shape[1] for k, v in state.items()
                          if k.endswith("fc_lambda.0.weight"))
        first_fc = next(k for k in state if k.endswith("se_layers.0.fc.0.weight"))
        fc = state[first_fc]
        reduction = fc.shape[1] // fc.shape[0]
    else:
        reduction = 4
    common = dict(num_joints=final.shape[0], final_conv_kernel=final.shape[-1],
                  image_size=tuple(image_size), se_reduction=reduction,
                  num_instances=(lambda_dim if lambda_dim > 2 else 2) if se_layers else 1)
    if "deconv_layers.0.weight" in state:
        blocks = tuple(len(_indices(state, rf"layer{i}\.(\d+)\.conv1\.weight"))
                       for i in (1, 2, 3, 4))
        bottleneck = "layer1.0.conv3.weight" in state
        depth = next((d for d, (b, n) in RESNET_SPECS.items()
                      if n == blocks and (b.expansion == 4) == bottleneck), None)
        if depth is None:
            raise ValueError(f"ResNet with blocks {blocks} is not a supported depth")
        deconv = _indices(state, r"deconv_layers\.(\d+)\.weight")
        convs = [i for i in deconv if state[f"deconv_layers.{i}.weight"].dim() == 4]
        if se_layers:
            common["se_modules"] = tuple(
                any(k.startswith(f"layer{i}_se.") for k in state) for i in (1, 2, 3, 4))
        return ModelConfig(
            arch="resnet", depth=depth,
            deconv_filters=tuple(state[f"deconv_layers.{i}.weight"].shape[1] for i in convs),
            deconv_kernels=tuple(state[f"deconv_layers.{i}.weight"].shape[-1] for i in convs),
            **common)
    stages = []
    for k in (2, 3, 4):
        modules = _indices(state, rf"stage{k}\.(\d+)\.")
        branches = _indices(state, rf"stage{k}\.0\.branches\.(\d+)\.")
        if not modules or not branches:
            raise ValueError(f"no stage{k} found: not an HRNet or SimpleBaseline checkpoint")
        bottleneck = f"stage{k}.0.branches.0.0.conv3.weight" in state
        stages.append(StageSpec(
            num_modules=len(modules),
            num_blocks=tuple(len(_indices(state, rf"stage{k}\.0\.branches\.{b}\.(\d+)\.conv1\."))
                             for b in branches),
            num_channels=tuple(state[f"stage{k}.0.branches.{b}.0.conv1.weight"].shape[0]
                               for b in branches),
            block="BOTTLENECK" if bottleneck else "BASIC"))
    if se_layers:
        common["se_modules"] = tuple(
            any(k.startswith(f"stage{i}_se.") for k in state) for i in (1, 2, 3, 4))
    return ModelConfig(
        arch="hrnet", stages=tuple(stages), stem_width=state["conv1.weight"].shape[0],
        layer1_planes=state["layer1.0.conv1.weight"].shape[0],
        layer1_blocks=len(_indices(state, r"layer1\.(\d+)\.conv1\.weight")), **common)


def _size_from_name(path: Path) -> tuple[int, int] | None:
    m = re.search(r"(\d{2,4})x(\d{2,4})", path.name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def import_checkpoint(
    path: str | Path,
    arch: str | None = None,
    image_size: tuple[int, int] | None = None,
    keypoints: str | None = None,
) -> tuple[PoseNet, CheckpointMeta]:
    """Build our model from an official MIPNet/HRNet or mmpose checkpoint.

    Without `arch` the architecture is inferred from the weights; with it (a registry name)
    the weights must fit that architecture exactly. The input size comes from `image_size`,
    else from a `256x192`-style part of the file name, else 256x192.
    """
    from ..models import model_config

    path = Path(path)
    state, kind = read_foreign_state_dict(path)
    size = image_size or _size_from_name(path) or (256, 192)
    try:
        if arch:
            inferred_instances = 2 if any("_se.se_layers." in k for k in state) else 1
            config = model_config(arch, image_size=size, num_instances=inferred_instances,
                                  num_joints=state["final_layer.weight"].shape[0]
                                  if "final_layer.weight" in state else None)
        else:
            config = infer_config(state, size)
        check_config(config)
        kps = keypoints or keypoint_set_for(config.num_joints).name
        check_meta(CheckpointMeta(config, kps))
    except (ValueError, KeyError) as exc:
        raise MipnetError(f"{path}: {exc}") from None
    model = build_from_config(config)
    _load_strict(model, state, path)
    meta = CheckpointMeta(config, kps, {
        "imported_from": path.name,
        "source_format": kind,
        "source_sha256": sha256_of(path),
        "trained_on": "unknown: imported checkpoint, see its original release",
    })
    return model.eval(), meta

