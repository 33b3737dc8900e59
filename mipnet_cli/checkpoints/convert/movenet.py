"""MoveNet TF.js graph models -> our `MoveNet` (SinglePose Lightning / Thunder) or
`MoveNetMultiPose` state dicts, names mapped one by one."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...core.errors import MipnetError
from ...models import MoveNet, build_model
from .tfjs import TfjsModel, read_tfjs

_PREFIX = "StatefulPartitionedCall/"
_FE = _PREFIX + "center_net_mobile_net_v2fpn_feature_extractor/model_1/"


def _conv_weight(w: np.ndarray, depthwise: bool) -> torch.Tensor:
    """TF layouts -> PyTorch: (kh, kw, in, out) -> (out, in, kh, kw); depthwise (kh, kw, C, 1)
    -> (C, 1, kh, kw)."""
    w = np.transpose(w, (2, 3, 0, 1)) if depthwise else np.transpose(w, (3, 2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(w, np.float32))


def _pairs(tf: TfjsModel, heads: Sequence[str]) -> dict[str, tuple[str, bool]]:
    """Our parameter name -> (their weight name, depthwise layout)."""
    w = tf.weights
    names: dict[str, tuple[str, bool]] = {}

    def conv(ours: str, kernel: str, bias: str | None, depthwise: bool = False) -> None:
        names[f"{ours}.weight"] = (kernel, depthwise)
        if bias is not None:
            names[f"{ours}.bias"] = (bias, False)

    model = _FE + "model/"
    conv("stem", model + "Conv1/Conv2D_weights", model + "Conv1/Conv2D_bn_offset")
    conv("blocks.0.depthwise", model + "expanded_conv_depthwise/depthwise_weights",
         model + "expanded_conv_depthwise/depthwise_bn_offset", True)
    conv("blocks.0.project", model + "expanded_conv_project/Conv2D_weights",
         model + "expanded_conv_project/Conv2D_bn_offset")
    i = 1
    while model + f"block_{i}_project/Conv2D_weights" in w:
        for part, kind in (("expand", "Conv2D"), ("depthwise", "depthwise"),
                           ("project", "Conv2D")):
            conv(f"blocks.{i}.{part}", model + f"block_{i}_{part}/{kind}_weights",
                 model + f"block_{i}_{part}/{kind}_bn_offset", part == "depthwise")
        i += 1
    conv("last", model + "Conv_1/Conv2D_weights", model + "Conv_1/Conv2D_bn_offset")
    for k, suffix in enumerate(("", "_1", "_2", "_3")):
        conv(f"laterals.{k}", _FE + f"conv2d{suffix}/Conv2D/ReadVariableOp",
             _FE + f"conv2d{suffix}/BiasAdd/ReadVariableOp")
    for k, suffix in enumerate(("", "_1", "_2")):
        base = _FE + f"separable_conv2d{suffix}/separable_conv2d"
        conv(f"fpn.{k}.depthwise", base + "/ReadVariableOp", None, True)
        conv(f"fpn.{k}.pointwise", base + "_weights", base + "_bn_offset")
    for head in heads:
        prefix = f"{_PREFIX}{head}_0/"
        sep = sorted({m.group(1) for n in w if n.startswith(prefix)
                      and (m := re.match(re.escape(prefix) + r"(separable_conv2d_\d+)/", n))})
        out = sorted({m.group(1) for n in w if n.startswith(prefix)
                      and (m := re.match(re.escape(prefix) + r"(conv2d_\d+)/", n))})
        if len(sep) != 1 or len(out) != 1:
            raise KeyError(f"{head} head")
        s, o = prefix + sep[0], prefix + out[0]
        conv(f"heads.{head}.separable.depthwise", s + "/separable_conv2d/ReadVariableOp", None,
             True)
        conv(f"heads.{head}.separable.pointwise", s + "/separable_conv2d/ReadVariableOp_1",
             s + "/BiasAdd/ReadVariableOp")
        conv(f"heads.{head}.out", o + "/Conv2D/ReadVariableOp", o + "/BiasAdd/ReadVariableOp")
    return names


def _input_size(tf: TfjsModel) -> int:
    """The side of the graph's (1, S, S, 3) input placeholder (0 if unknown)."""
    for node in tf.nodes:
        if node.op == "Placeholder":
            dims = node.attrs.get("shape", {}).get("shape", {}).get("dim", [])
            if len(dims) == 4:
                return int(dims[1].get("size", 0))
    return 0


def _arch(tf: TfjsModel, path: Path) -> str:
    stem = tf.weights.get(_FE + "model/Conv1/Conv2D_weights")
    if stem is None:
        raise MipnetError(f"{path}: not a MoveNet model (no MobileNetV2 stem named like "
                          "MoveNet's)")
    width, size = stem.shape[-1] / 32, _input_size(tf)
    if any(n.op == "TopKV2" for n in tf.nodes):
        if abs(width - 1.5) > 1e-6:
            raise MipnetError(f"{path}: MoveNet MultiPose with width {width:g}; only "
                              "MultiPose Lightning (1.5) is known")
        return "movenet_multipose"
    for name, (w, s) in {"movenet_thunder": (1.75, 256),
                         "movenet_lightning": (1.0, 192)}.items():
        if abs(width - w) < 1e-6 and size == s:
            return name
    raise MipnetError(f"{path}: MoveNet with width {width:g} and input {size} is neither "
                      "Lightning (1.0, 192) nor Thunder (1.75, 256)")


def movenet_from_tfjs(path: str | Path) -> MoveNet:
    """Our MoveNet (SinglePose) or MoveNetMultiPose with the weights of a MoveNet TF.js graph
    model."""
    path = Path(path)
    tf = read_tfjs(path)
    arch = _arch(tf, path)
    model = build_model(arch)
    assert isinstance(model, MoveNet)
    own = model.state_dict()
    try:
        pairs = _pairs(tf, type(model).head_channels)
        state = {ours: _conv_weight(tf.weights[theirs], dw) if ours.endswith("weight")
                 else torch.from_numpy(tf.weights[theirs].astype(np.float32))
                 for ours, (theirs, dw) in pairs.items()}
    except KeyError as exc:
        raise MipnetError(f"{path}: not a MoveNet {arch} model (missing {exc})") from None
    for key, value in own.items():
        if key not in state or tuple(state[key].shape) != tuple(value.shape):
            got = tuple(state[key].shape) if key in state else "nothing"
            raise MipnetError(f"{path}: {key} expects {tuple(value.shape)}, the file gives {got}")
    model.load_state_dict(state, strict=True)
    return model.eval()
