"""A small reader for ONNX files: nodes, attributes and initializers, without the onnx package.

ONNX models are protocol buffers. This reads the wire format directly for the few message
fields that a converter needs (ModelProto.graph; GraphProto.node / initializer / input /
output; NodeProto; AttributeProto; TensorProto with raw or typed data).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import MipnetError

# TensorProto.DataType -> numpy dtype (the types networks store weights in).
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
           9: np.bool_, 10: np.float16, 11: np.float64}


class _Truncated(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _fields(buf: memoryview) -> list[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of every field of one message, in order."""
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Truncated("fixed64 runs past the end")
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise _Truncated("field runs past the end")
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Truncated("fixed32 runs past the end")
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def _packed(value: int | memoryview, wire: int, kind: str) -> list:
    """Repeated scalars: packed (wire type 2) or one value."""
    if wire != 2:
        if kind == "f":
            return [struct.unpack("<f", int(value).to_bytes(4, "little"))[0]]
        return [_signed(int(value))]
    assert isinstance(value, memoryview)
    if kind == "f":
        return list(np.frombuffer(value, "<f4"))
    values, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        values.append(_signed(v))
    return values


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _text(value: int | memoryview) -> str:
    assert isinstance(value, memoryview)
    return bytes(value).decode("utf-8")


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    dtype, name, raw = 1, "", None
    typed: dict[int, list] = {}
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _packed(value, wire, "i")
        elif number == 2:
            dtype = int(value)
        elif number == 8:
            name = _text(value)
        elif number == 9:
            raw = bytes(value)  # type: ignore[arg-type]
        elif number == 4:
            typed.setdefault(4, []).extend(_packed(value, wire, "f"))
        elif number in (5, 7):  # int32_data, int64_data
            typed.setdefault(number, []).extend(_packed(value, wire, "i"))
    if dtype not in _DTYPES:
        raise ValueError(f"tensor {name!r} has unsupported data type {dtype}")
    np_dtype = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    if raw is not None:
        array = np.frombuffer(raw, np_dtype)
    else:
        array = np.array(next(iter(typed.values()), []), dtype=np_dtype)
    count = int(np.prod(dims)) if dims else 1
    if array.size != count:
        raise ValueError(f"tensor {name!r} holds {array.size} values for shape {dims}")
    return name, array.astype(np_dtype.newbyteorder("="), copy=True).reshape(dims)


def _attribute(buf: memoryview) -> tuple[str, object]:
    name, scalar, ints, floats, text, tensor = "", None, [], [], None, None
    for number, wire, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 2:
            scalar = struct.unpack("<f", int(value).to_bytes(4, "little"))[0]
        elif number == 3:
            scalar = _signed(int(value))
        elif number == 4:
            text = bytes(value)  # type: ignore[arg-type]
        elif number == 5:
            tensor = _tensor(value)[1]  # type: ignore[arg-type]
        elif number == 7:
            floats += _packed(value, wire, "f")
        elif number == 8:
            ints += _packed(value, wire, "i")
    if tensor is not None:
        return name, tensor
    if text is not None:
        return name, text.decode("utf-8", "replace")
    if ints or floats:
        return name, ints or floats
    return name, scalar


@dataclass
class OnnxNode:
    """One graph node: operator, input and output value names, attributes."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, object] = field(default_factory=dict)


@dataclass
class OnnxGraph:
    """The parts of an ONNX model a converter reads."""

    nodes: list[OnnxNode]
    initializers: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    producer: str = ""


def _node(buf: memoryview) -> OnnxNode:
    node = OnnxNode("", "", [], [])
    for number, _, value in _fields(buf):
        if number == 1:
            node.inputs.append(_text(value))
        elif number == 2:
            node.outputs.append(_text(value))
        elif number == 3:
            node.name = _text(value)
        elif number == 4:
            node.op = _text(value)
        elif number == 5:
            key, attr = _attribute(value)  # type: ignore[arg-type]
            node.attrs[key] = attr
    return node


def _value_name(buf: memoryview) -> str:
    return next((_text(v) for n, _, v in _fields(buf) if n == 1), "")


def read_onnx(path: str | Path) -> OnnxGraph:
    """The graph of an ONNX file; a MipnetError naming the file when it is not one."""
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise MipnetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        top = _fields(data)
        graph_buf = next((v for n, w, v in top if n == 7 and w == 2), None)
        producer = next((_text(v) for n, w, v in top if n == 2 and w == 2), "")
        if graph_buf is None:
            raise ValueError("no graph")
        nodes, inits, inputs, outputs = [], {}, [], []
        for number, wire, value in _fields(graph_buf):  # type: ignore[arg-type]
            if wire != 2:
                continue
            if number == 1:
                nodes.append(_node(value))  # type: ignore[arg-type]
            elif number == 5:
                name, array = _tensor(value)  # type: ignore[arg-type]
                inits[name] = array
            elif number == 11:
                inputs.append(_value_name(value))  # type: ignore[arg-type]
            elif number == 12:
                outputs.append(_value_name(value))  # type: ignore[arg-type]
    except _Truncated:
        raise MipnetError(f"{path}: truncated ONNX file") from None
    except (ValueError, UnicodeDecodeError, AssertionError, struct.error) as exc:
        raise MipnetError(f"{path}: not an ONNX model ({exc})") from None
    if not nodes:
        raise MipnetError(f"{path}: not an ONNX model (its graph has no nodes)")
    return OnnxGraph(nodes, inits, inputs, outputs, producer)
