"""YOLOX ONNX export -> our `YOLOX` state dict.

The exported graph has batch norm folded into the convolutions and mostly anonymous
initializer names, so tensors are matched by position: the graph's Conv nodes in order
against our convolutions in the order a forward pass runs them, with every shape, stride,
group count and the Focus/SPP/resize structure checked. A file of another architecture fails
with the first place where it differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.errors import MipnetError
from ...models.yolox import YOLOX, YoloxConfig
from .onnx_file import OnnxGraph, read_onnx


def _execution_order(model: nn.Module, input_hw: tuple[int, int]) -> list[tuple[str, nn.Conv2d]]:
    order: list[tuple[str, nn.Conv2d]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append((n, mod)))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_hw))
    finally:
        for h in hooks:
            h.remove()
    return order


def _input_hw(graph: OnnxGraph, path: Path) -> tuple[int, int]:
    """(H, W) from the Focus slicing's first conv input is not stored; use the file name or
    the published 416×416 of YOLOX-Nano/Tiny."""
    for token in path.stem.split("_"):
        if "x" in token and all(p.isdigit() for p in token.split("x")):
            h, w = (int(p) for p in token.split("x"))
            return h, w
    return 416, 416


def _config_from_graph(graph: OnnxGraph, path: Path) -> YoloxConfig:
    convs = [n for n in graph.nodes if n.op == "Conv"]
    ops = {n.op for n in graph.nodes}
    if not convs or "MaxPool" not in ops or sum(n.op == "Slice" for n in graph.nodes) < 8:
        raise MipnetError(f"{path}: not a YOLOX network (no Focus stem / SPP block found)")
    stem_out = graph.initializers[convs[0].inputs[1]].shape[0]
    cls_pred = graph.initializers.get("head.cls_preds.0.weight")
    if cls_pred is None:
        raise MipnetError(f"{path}: not a YOLOX network (no head.cls_preds.0.weight)")
    depthwise = any(int(n.attrs.get("group", 1)) > 1 for n in convs)
    width = stem_out / 64
    bottlenecks = sum(n.op == "Add" for n in graph.nodes)  # dark2..dark4 shortcuts: n + 3n + 3n
    depth = {7: 0.33, 14: 0.67, 21: 1.0, 28: 1.33}.get(bottlenecks)
    if depth is None:
        raise MipnetError(f"{path}: unexpected YOLOX depth ({bottlenecks} residual additions)")
    return YoloxConfig(width=width, depth=depth, depthwise=depthwise,
                       num_classes=int(cls_pred.shape[0]), input_size=_input_hw(graph, path))


def yolox_from_onnx(path: str | Path) -> YOLOX:
    """Our YOLOX with the weights of an exported YOLOX ONNX file (raw-output export)."""
    path = Path(path)
    graph = read_onnx(path)
    config = _config_from_graph(graph, path)
    model = YOLOX(config).eval()
    ours = _execution_order(model, config.input_size)
    theirs = [n for n in graph.nodes if n.op == "Conv"]
    if len(ours) != len(theirs):
        raise MipnetError(f"{path}: {len(theirs)} convolutions where YOLOX (width "
                          f"{config.width}, depth {config.depth}) has {len(ours)}")
    state: dict[str, torch.Tensor] = {}
    for k, ((name, conv), node) in enumerate(zip(ours, theirs, strict=True)):
        try:
            weight = graph.initializers[node.inputs[1]]
            bias = graph.initializers[node.inputs[2]]
        except (IndexError, KeyError):
            raise MipnetError(f"{path}: convolution {k} ({node.name}) has no stored weights "
                              "or bias") from None
        stride = list(node.attrs.get("strides", [1, 1]))
        group = int(node.attrs.get("group", 1))
        if (tuple(weight.shape) != tuple(conv.weight.shape) or stride != list(conv.stride)
                or group != conv.groups or tuple(bias.shape) != tuple(conv.bias.shape)):
            raise MipnetError(
                f"{path}: convolution {k} ({node.name}) is {tuple(weight.shape)} stride "
                f"{stride} groups {group}; YOLOX expects {tuple(conv.weight.shape)} stride "
                f"{list(conv.stride)} groups {conv.groups} at {name}")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight, np.float32))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
    model.load_state_dict(state, strict=True)
    return model
