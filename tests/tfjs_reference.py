"""An independent NumPy evaluation of a TF.js graph, node by node (the reference that proves a
converted network is the published one). Covers the ops of the MoveNet SinglePose and MultiPose
graphs (MultiPose: any input whose sides are multiples of 32)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mipnet_cli.checkpoints.convert.tfjs import TfjsModel


def _same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """NHWC input padded as TensorFlow's SAME does."""
    pads = []
    for size in x.shape[1:3]:
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])


def _conv(x: np.ndarray, w: np.ndarray, stride: int, depthwise: bool) -> np.ndarray:
    k = w.shape[0]
    xp = _same_pad(x, k, stride)
    win = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # N,H,W,C,kh,kw
    if depthwise:
        return np.einsum("nhwcij,ijc->nhwc", win, w[..., 0], optimize=True)
    return np.einsum("nhwcij,ijco->nhwo", win, w, optimize=True)


def _resize_bilinear_half_pixel(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    n, h, w, c = x.shape
    oh, ow = size
    out = np.empty((n, oh, ow, c), x.dtype)
    ys = np.clip((np.arange(oh) + 0.5) * h / oh - 0.5, 0, h - 1)
    xs = np.clip((np.arange(ow) + 0.5) * w / ow - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    for i in range(n):
        a, b = x[i][y0][:, x0], x[i][y0][:, x1]
        cc, d = x[i][y1][:, x0], x[i][y1][:, x1]
        out[i] = (a * (1 - fx) + b * fx) * (1 - fy) + (cc * (1 - fx) + d * fx) * fy
    return out


def _max_pool_same(x: np.ndarray, k: int) -> np.ndarray:
    """NHWC max pooling, stride 1, SAME padding (padding never wins)."""
    n, h, w, c = x.shape
    total = k - 1
    xp = np.pad(x, [(0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2),
                    (0, 0)], constant_values=-np.inf)
    return sliding_window_view(xp, (k, k), axis=(1, 2)).max(axis=(-2, -1))


def _strided_slice(x: np.ndarray, node, begin, end, strides) -> np.ndarray:
    """TensorFlow's StridedSlice with begin/end/new-axis/shrink masks (no ellipsis)."""
    assert not node.attr("ellipsis_mask", 0)
    bm, em = node.attr("begin_mask", 0), node.attr("end_mask", 0)
    nm, sm = node.attr("new_axis_mask", 0), node.attr("shrink_axis_mask", 0)
    index: list = []
    for i, (b, e, s) in enumerate(zip(begin, end, strides, strict=True)):
        if nm >> i & 1:
            index.append(None)
        elif sm >> i & 1:
            index.append(int(b))
        else:
            index.append(slice(None if bm >> i & 1 else int(b), None if em >> i & 1 else int(e),
                               int(s)))
    return np.asarray(x)[tuple(index)]


def run_graph(model: TfjsModel, image: np.ndarray, outputs: tuple[str, ...] = ()
              ) -> np.ndarray | dict[str, np.ndarray]:
    """The graph's output for one (1, H, W, 3) int32 input, in float64 arithmetic; with
    `outputs`, the values of those nodes instead (name -> array)."""
    values: dict[str, np.ndarray] = {}
    for name, w in model.weights.items():
        values[name] = w.astype(np.float64) if w.dtype == np.float32 else w

    def get(ref: str):
        name, _, index = ref.partition(":")
        v = values[name]
        return v[int(index)] if index else (v[0] if isinstance(v, list) else v)

    out = None
    for node in model.nodes:
        op, ins = node.op, node.inputs
        if op == "Const":
            continue
        if op == "Placeholder":
            values[node.name] = image
            continue
        a = [get(i) for i in ins]
        if op == "Cast":
            dst = node.attr("DstT")["type"]
            r = a[0].astype(np.float64 if dst == "DT_FLOAT" else np.int64)
        elif op in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "DepthwiseConv2dNative"):
            stride = node.attr("strides")[1]
            r = _conv(a[0], a[1], stride, op != "_FusedConv2D")
            fused = node.attr("fused_ops", [])
            if "BiasAdd" in fused:
                r = r + a[2]
            if "Relu6" in fused:
                r = np.clip(r, 0, 6)
            elif "Relu" in fused:
                r = np.maximum(r, 0)
        elif op == "Unpack":
            axis = node.attr("axis", 0)
            r = [np.take(a[0], i, axis=axis) for i in range(a[0].shape[axis])]
        elif op == "Pack":
            r = np.stack(a, axis=node.attr("axis", 0))
        elif op == "ExpandDims":
            r = np.expand_dims(a[0], int(np.asarray(a[1]).ravel()[0]))
        elif op == "Squeeze":
            r = np.squeeze(a[0], axis=tuple(node.attr("squeeze_dims")))
        elif op == "Reshape":
            r = a[0].reshape([int(v) for v in np.asarray(a[1]).ravel()])
        elif op == "Sub":
            r = a[0] - a[1]
        elif op == "Mul":
            r = a[0] * a[1]
        elif op == "AddV2":
            r = a[0] + a[1]
        elif op == "RealDiv":
            r = a[0] / a[1]
        elif op == "FloorDiv":
            r = a[0] // a[1]
        elif op == "SquaredDifference":
            r = (a[0] - a[1]) ** 2
        elif op == "Sqrt":
            r = np.sqrt(a[0])
        elif op == "Sigmoid":
            r = 1 / (1 + np.exp(-a[0]))
        elif op == "ResizeBilinear":
            assert node.attr("half_pixel_centers") and not node.attr("align_corners")
            size = tuple(int(v) for v in np.asarray(a[1]).ravel())
            r = _resize_bilinear_half_pixel(a[0], size)
        elif op == "ArgMax":
            r = np.argmax(a[0], axis=int(np.asarray(a[1]).ravel()[0]))
        elif op == "GatherNd":
            idx = np.asarray(a[1]).astype(int)
            r = a[0][tuple(np.moveaxis(idx, -1, 0))]
        elif op == "ConcatV2":
            r = np.concatenate(a[:-1], axis=int(np.asarray(a[-1]).ravel()[0]))
        elif op == "Identity":
            r = a[0]
            out = r
        elif op == "Shape":
            r = np.array(np.shape(a[0]), np.int64)
        elif op == "Size":
            r = np.array(np.size(a[0]), np.int64)
        elif op == "StridedSlice":
            r = _strided_slice(a[0], node, *(np.asarray(v).ravel() for v in a[1:]))
        elif op == "MaxPool":
            assert node.attr("padding") == "SAME" and node.attr("strides") == [1, 1, 1, 1]
            r = _max_pool_same(a[0], node.attr("ksize")[1])
        elif op == "Abs":
            r = np.abs(a[0])
        elif op == "Exp":
            r = np.exp(a[0])
        elif op == "Reciprocal":
            r = 1 / a[0]
        elif op in ("Less", "Greater", "GreaterEqual", "Equal", "LogicalAnd", "Maximum",
                    "Minimum"):
            r = {"Less": np.less, "Greater": np.greater, "GreaterEqual": np.greater_equal,
                 "Equal": np.equal, "LogicalAnd": np.logical_and, "Maximum": np.maximum,
                 "Minimum": np.minimum}[op](a[0], a[1])
        elif op == "AddN":
            r = sum(a[1:], a[0])
        elif op == "Range":
            r = np.arange(a[0], a[1], a[2]).astype(np.float64)
        elif op == "Fill":
            r = np.full([int(v) for v in np.asarray(a[0]).ravel()], a[1])
        elif op == "Tile":
            r = np.tile(a[0], [int(v) for v in np.asarray(a[1]).ravel()])
        elif op == "Select":
            r = np.where(a[0], a[1], a[2])
        elif op in ("Max", "Sum"):
            axis = tuple(int(v) for v in np.asarray(a[1]).ravel())
            r = (np.max if op == "Max" else np.sum)(a[0], axis=axis,
                                                     keepdims=bool(node.attr("keep_dims")))
        elif op == "Split":
            axis = int(np.asarray(a[0]).ravel()[0])
            r = np.split(a[1], node.attr("num_split"), axis=axis)
        elif op == "TopKV2":
            k = int(np.asarray(a[1]).ravel()[0])
            order = np.argsort(-a[0], axis=-1, kind="stable")[..., :k]
            r = [np.take_along_axis(a[0], order, -1), order.astype(np.int64)]
        else:
            raise NotImplementedError(op)
        values[node.name] = r
    if outputs:
        return {name: get(name) for name in outputs}
    return out
