"""A reader for TensorFlow.js graph models: `model.json` (topology + weightsManifest) and its
binary weight shards, with float16 and uint8 affine quantization undone."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import MipnetError

_STORED = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "uint8": np.uint8,
           "uint16": np.uint16, "bool": np.bool_}


@dataclass
class TfjsNode:
    op: str
    name: str
    inputs: list[str]
    attrs: dict = field(default_factory=dict)

    def attr(self, key: str, default=None):
        """An attribute's value: ints/floats/strings/lists decoded from the JSON protobuf form."""
        value = self.attrs.get(key)
        if value is None:
            return default
        if "list" in value:
            lst = value["list"]
            if "i" in lst:
                return [int(v) for v in lst["i"]]
            if "s" in lst:
                return [base64.b64decode(v).decode() for v in lst["s"]]
            if "f" in lst:
                return [float(v) for v in lst["f"]]
            return []
        if "i" in value:
            return int(value["i"])
        if "f" in value:
            return float(value["f"])
        if "b" in value:
            return bool(value["b"])
        if "s" in value:
            return base64.b64decode(value["s"]).decode()
        return value


@dataclass
class TfjsModel:
    nodes: list[TfjsNode]
    weights: dict[str, np.ndarray]
    meta: dict


def read_tfjs(path: str | Path) -> TfjsModel:
    """The graph and the float32/int32 weights of a TF.js graph model (`.json` + shards)."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MipnetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MipnetError(f"{path}: not a TF.js graph model (not JSON: {exc})") from None
    if (not isinstance(spec, dict) or not isinstance(spec.get("modelTopology"), dict)
            or not isinstance(spec.get("weightsManifest"), list)):
        raise MipnetError(f"{path}: not a TF.js graph model (needs modelTopology and "
                          "weightsManifest)")
    nodes = [TfjsNode(n.get("op", ""), n.get("name", ""), list(n.get("input", [])),
                      n.get("attr", {}))
             for n in spec["modelTopology"].get("node", [])]
    weights: dict[str, np.ndarray] = {}
    for group in spec["weightsManifest"]:
        data = b""
        for shard in group.get("paths", []):
            shard_path = path.parent / shard
            try:
                data += shard_path.read_bytes()
            except OSError as exc:
                raise MipnetError(f"{shard_path}: weight shard of {path.name} cannot be read "
                                  f"({exc.strerror or exc})") from None
        offset = 0
        for entry in group.get("weights", []):
            name, shape = entry["name"], [int(v) for v in entry.get("shape", [])]
            quant = entry.get("quantization")
            stored = np.dtype(_STORED[quant["dtype"] if quant else entry["dtype"]])
            count = int(np.prod(shape)) if shape else 1
            size = count * stored.itemsize
            if offset + size > len(data):
                raise MipnetError(f"{path}: weight shards are truncated ({len(data)} bytes, "
                                  f"{name} needs bytes up to {offset + size})")
            raw = np.frombuffer(data, stored.newbyteorder("<"), count, offset)
            offset += size
            if quant and quant["dtype"] == "uint8":
                value = raw.astype(np.float32) * float(quant["scale"]) + float(quant["min"])
            elif entry["dtype"] == "float32":
                value = raw.astype(np.float32)
            else:
                value = raw.astype(_STORED[entry["dtype"]])
            weights[name] = value.reshape(shape)
        if offset != len(data):
            raise MipnetError(f"{path}: weight shards hold {len(data)} bytes, the manifest "
                              f"describes {offset}")
    return TfjsModel(nodes, weights, {k: spec.get(k) for k in ("format", "generatedBy",
                                                                "convertedBy", "signature")})
