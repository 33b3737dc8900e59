"""Person boxes: torchvision detectors, COCO detection-result files and ground-truth boxes."""

from __future__ import annotations

import inspect
import json
import os
import pickle
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision
from torchvision.models import WeightsEnum

from ..core.errors import MipnetError, torch_load_message
from ..core.files import atomic_path
from .base import Candidates, DetectorBase
from .person_rcnn import PERSON_DETECTORS

DEFAULT_DETECTOR = "fasterrcnn_resnet50_fpn_v2"

PERSON_LABEL = 1  # "person" in torchvision's COCO category list, and in 2-class person models
_RCNN_CLASSIFIER = "roi_heads.box_predictor.cls_score.weight"


def detector_names() -> list[str]:
    """Names of the detection builders that `PersonDetector` accepts: torchvision's and ours."""
    return sorted([*torchvision.models.list_models(module=torchvision.models.detection),
                   *PERSON_DETECTORS])


def _checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _cache_path(weights: WeightsEnum) -> Path:
    return _checkpoint_dir() / os.path.basename(urlparse(weights.url).path)


def weights_cached(name: str = DEFAULT_DETECTOR, tag: str = "DEFAULT") -> bool:
    """Whether torchvision's `tag` weights of detector `name` are in the torch hub cache."""
    return _cache_path(_pick(torchvision.models.get_model_weights(name), tag)).is_file()


def _ensure_cached(weights: WeightsEnum, progress: bool) -> Path:
    """Make sure torchvision's weights file is in the torch hub cache, downloading it if needed.

    Offline, the error says which URL to fetch by hand and where to put it.
    """
    url = weights.url
    target = _cache_path(weights)
    filename = target.name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(filename)
    try:
        torch.hub.download_url_to_file(
            url, str(target), hash_prefix=match.group(1) if match else None, progress=progress
        )
    except Exception as exc:  # URLError, HTTPError, socket errors, hash mismatch
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MipnetError(
            f"cannot download detector weights {weights} from {url} ({reason}); download that "
            f"file by hand into {target.parent}{os.sep} (keeping the name {filename}), "
            "or pass --detector-weights PATH"
        ) from None
    return target


def _weights_enum_for(builder: Any, param: str) -> type[WeightsEnum]:
    """The WeightsEnum class a builder's `param` argument takes (from its type annotation)."""
    annotation = inspect.signature(builder).parameters[param].annotation
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, WeightsEnum):
            return arg
    raise MipnetError(f"detector builder {builder.__name__} has no pretrained {param} to choose")


def _pick(enum: type[WeightsEnum], tag: str) -> WeightsEnum:
    """A member of `enum` by name ("DEFAULT", "COCO_V1" or "Enum.COCO_V1")."""
    member = tag.split(".")[-1]
    try:
        return enum[member]
    except KeyError:
        choices = ", ".join(["DEFAULT", *enum.__members__])
        raise MipnetError(
            f"unknown weights {tag!r} for {enum.__name__}; choose {choices}"
        ) from None


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata from a local weights file.

    Accepts a plain state dict, a checkpoint dict with a `model` or `state_dict` entry (as
    `PersonDetector.save` and most training scripts write), or a .safetensors file (whose
    metadata may name the builder and class count, as `PersonDetector.save` writes them).
    """
    if not path.is_file():
        raise MipnetError(f"{path}: detector weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as f:
                info: dict[str, Any] = dict(f.metadata() or {})
            if "num_classes" in info:
                info["num_classes"] = int(info["num_classes"])
            return load_file(str(path)), info
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MipnetError(f"{path}: {torch_load_message(exc)}") from None
    meta: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                meta = {k: v for k, v in obj.items() if k != key}
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MipnetError(f"{path}: holds no state dict (expected name -> tensor entries)")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, meta


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load `state` into `model`, or explain precisely why it does not fit."""
    own = model.state_dict()

    def counted(key: str) -> bool:  # BatchNorm counters are absent from frozen-BN checkpoints
        return not key.endswith("num_batches_tracked")

    missing = [k for k in own if k not in state and counted(k)]
    unexpected = [k for k in state if k not in own and counted(k)]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    if problems:
        raise MipnetError(
            f"{path}: weights do not fit this detector ({'; '.join(problems)}); check the "
            "detector name and the number of classes"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


class PersonDetector(DetectorBase):
    """A torchvision detector reduced to person boxes.

    Weights, in order of precedence:
    - `weights_path`: a local file (state dict, checkpoint dict or .safetensors). The number of
      classes comes from `num_classes`, else the file's metadata, else its R-CNN classifier.
    - `weights`: a torchvision weights tag of this builder ("DEFAULT", "COCO_V1", ...), fetched
      through torchvision's weights API into the torch hub cache (offline: a clear error).
    - `weights=None`: random initialisation (optionally on a `weights_backbone` tag), e.g. for
      training a small person detector; with `num_classes=2`, label 1 is "person".

    Boxes below `score_thresh` are dropped; `nms_iou` is the IoU above which the detector's
    class-wise NMS suppresses the weaker of two person boxes; at most `max_detections` boxes are
    kept per image, best first. A size in `sizes` is the shorter image side the network
    resizes to (the builder's own: 800 for the R-CNNs; the longer side is capped in proportion).
    """

    def __init__(
        self,
        name: str = DEFAULT_DETECTOR,
        *,
        weights: str | None = "DEFAULT",
        weights_path: str | os.PathLike | None = None,
        weights_backbone: str | None = None,
        num_classes: int | None = None,
        score_thresh: float = 0.5,
        nms_iou: float = 0.5,
        max_detections: int = 100,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        sizes: Sequence[int] | None = None,
        progress: bool = True,
        **builder_kwargs: Any,
    ) -> None:
        if name not in detector_names():
            choices = ", ".join(detector_names())
            raise MipnetError(f"unknown detector {name!r}; choose one of {choices}")
        super().__init__(name, score_thresh, nms_iou, max_detections, batch_size, device, sizes)

        builder = torchvision.models.get_model_builder(name)
        kwargs: dict[str, Any] = dict(builder_kwargs)
        local: tuple[Path, dict[str, torch.Tensor]] | None = None
        if weights_path is not None:
            path = Path(weights_path)
            state, meta = _read_state_dict(path)
            saved_name = meta.get("builder")
            if isinstance(saved_name, str) and saved_name != name:
                raise MipnetError(f"{path}: weights were saved from detector {saved_name!r}, "
                                  f"not {name!r}")
            if num_classes is None:
                num_classes = meta.get("num_classes")
            if num_classes is None and _RCNN_CLASSIFIER in state:
                num_classes = int(state[_RCNN_CLASSIFIER].shape[0])
            local = (path, state)
            kwargs.update(weights=None, weights_backbone=None)
        elif weights is not None:
            try:
                enum = torchvision.models.get_model_weights(name)
            except ValueError:
                raise MipnetError(f"detector {name} has no downloadable weights; pass its "
                                  "weights file (--detector-weights FILE)") from None
            chosen = _pick(enum, weights)
            trained_classes = len(chosen.meta["categories"])
            if num_classes not in (None, trained_classes):
                raise MipnetError(f"{name} weights {weights} detect {trained_classes} classes; "
                                  "num_classes only applies to local or untrained weights")
            num_classes = trained_classes
            _ensure_cached(chosen, progress)
            kwargs.update(weights=chosen, weights_backbone=None)
        else:
            backbone = None
            if weights_backbone is not None:
                backbone = _pick(_weights_enum_for(builder, "weights_backbone"), weights_backbone)
                _ensure_cached(backbone, progress)
            kwargs.update(weights=None, weights_backbone=backbone)
        # None keeps the builder's own default (91 COCO slots; 2 for keypointrcnn).
        self.num_classes = int(num_classes) if num_classes is not None else None
        if self.num_classes is not None:
            kwargs["num_classes"] = self.num_classes
        pretrained = kwargs["weights"] is not None or kwargs["weights_backbone"] is not None
        try:
            model = builder(progress=progress, **kwargs)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
            if not pretrained:
                raise
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MipnetError(
                f"cached detector weights in {_checkpoint_dir()} are unusable ({reason}); "
                "delete the file to download it again"
            ) from None
        if local is not None:
            _load_into(model, local[1], local[0])
        self.model = model
        self._configure_postprocess()
        self.model.eval().to(self.device)
        transform = model.transform
        if self.sizes is not None and getattr(transform, "fixed_size", None) is not None:
            raise MipnetError(f"detector {name} has a fixed input size; leave out the sizes")
        self._own_sizes = (tuple(transform.min_size), transform.max_size)

    def _configure_postprocess(self) -> None:
        """Set the detector's own score threshold, NMS IoU and per-image cap."""
        head = getattr(self.model, "roi_heads", self.model)
        settings = {
            "score_thresh": self.score_thresh,
            "nms_thresh": self.nms_iou,
            # Non-person classes share the detector's per-image cap before we keep persons.
            "detections_per_img": max(self.max_detections, 1000),
        }
        for attr, value in settings.items():
            if not hasattr(head, attr):
                raise MipnetError(f"detector {self.name} has no {attr} setting to configure")
            setattr(head, attr, value)

    def _candidates(self, images: Sequence[np.ndarray], size: int | None) -> list[Candidates]:
        transform = self.model.transform
        transform.min_size, transform.max_size = self._own_sizes if size is None else (
            (size,), round(size * self._own_sizes[1] / self._own_sizes[0][-1]))
        tensors = [torch.from_numpy(np.ascontiguousarray(img)).to(self.device)
                   .permute(2, 0, 1).float().div_(255.0) for img in images]
        return [self._person_boxes(out) for out in self.model(tensors)]

    def _person_boxes(self, out: dict[str, torch.Tensor]) -> Candidates:
        keep = (out["labels"] == PERSON_LABEL) & (out["scores"] >= self.score_thresh)
        return out["boxes"][keep], out["scores"][keep]

    def save(self, path: str | os.PathLike, provenance: dict | None = None,
             half: bool = False) -> None:
        """Write the weights with the builder name and class count (loadable as weights_path).

        A class count of None stands for the builder's default. A `.safetensors` path gets a
        safetensors file (its metadata: builder, num_classes and `provenance` as JSON), any
        other a torch checkpoint dict. `half` stores floating-point tensors as float16 (they
        load back into the float32 model).
        """
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        with atomic_path(path) as tmp:
            if Path(path).suffix == ".safetensors":
                from safetensors.torch import save_file

                meta = {"builder": self.name, "provenance": json.dumps(provenance or {})}
                if self.num_classes is not None:
                    meta["num_classes"] = str(self.num_classes)
                save_file(state, str(tmp), metadata=meta)
            else:
                torch.save({"model": state, "builder": self.name,
                            "num_classes": self.num_classes, "provenance": provenance or {}},
                           tmp)


# ---------------------------------------------------------------------------- box files
