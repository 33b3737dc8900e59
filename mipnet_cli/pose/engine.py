"""The top-down engine: boxes -> batched crops -> every λ -> decode -> merge.

`PoseEstimator` runs a pose network on person boxes of many images at once and returns the
merged poses per image. It is the core that `mipnet predict`, `mipnet eval`, `mipnet video` and
training-time validation share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..checkpoints.format import load_checkpoint
from ..core.errors import MipnetError
from ..core.geometry import PIXEL_STD, box_to_center_scale, warp_crops
from ..core.hardware import autocast_dtype, pick_device
from ..core.keypoints import KeypointSet, get_keypoint_set
from ..core.results import Box, Pose, whole_image_boxes
from ..models import PoseNet, check_config, instance_lambdas
from .merge import box_areas, merge_instances, recover_poses


class PoseScorer(Protocol):
    """Scores poses given in image pixels (`--rescore psm`): for each image, one score (P,)
    for its poses (P, K, 2+). `pose.psm.PsmScorer` is the one shipped."""

    def score(self, images: Sequence[np.ndarray], poses: Sequence[np.ndarray]
              ) -> list[np.ndarray]: ...


@dataclass
class EngineOptions:
    """Inference settings (defaults are the official COCO test settings)."""

    flip_test: bool = True
    dark: bool = False
    instances: int | None = None  # λ values to run (default: all the network has)
    instance_decay: float = 0.5  # secondary instances' box-score factor
    in_vis_thre: float = 0.2  # joints above this confidence count in the rescoring
    oks_thresh: float = 0.9  # OKS-NMS threshold
    box_padding: float = 1.25
    batch_size: int = 64  # crops per network call
    half: bool = False  # fp16 on CUDA, bf16 autocast on CPUs that compute it natively
    # NHWC activations (faster depthwise convolutions in oneDNN); default: on the CPU
    channels_last: bool | None = None
    # How a pose's keypoints weigh in its score: "keypoints" (mean confident keypoint score,
    # official) or "psm" (the OKS a single-stage network's PSM predicts; needs a `scorer`)
    rescore: str = "keypoints"
    # Whole-image networks: the letterbox side (a multiple of 32; None: the checkpoint's) and
    # the most people decoded per image (None: the checkpoint's)
    input_size: int | None = None
    max_people: int | None = None
    # Crowd recovery (`recovery` estimator): its poses' scores are multiplied by this, then
    # merged with the top-down poses by OKS-NMS at `recover_oks`
    recover_factor: float = 0.5
    recover_oks: float = 0.7


@dataclass
class CropPoses:
    """Decoded poses of a batch of boxes: (B, N, K, 3) keypoints in image pixels, with the
    network's own pose scores and areas (B, N) when its family gives them (`Candidates`)."""

    keypoints: np.ndarray
    centers: np.ndarray  # (B, 2)
    scales: np.ndarray  # (B, 2)
    scores: np.ndarray | None = None
    areas: np.ndarray | None = None
    instances: np.ndarray | None = None  # (N,) λ index of each slot (default 0..N-1)
    psm: np.ndarray | None = None  # (B, N) predicted OKS, where a pose scoring module gave one
    boxes: np.ndarray | None = None  # (B, N, 4) xywh: each pose's own box, where the family has one

    @classmethod
    def join(cls, parts: list[CropPoses], centers: np.ndarray, scales: np.ndarray,
             joints: int, slots: int) -> CropPoses:
        """The decoded poses of consecutive batches as one (an empty one for no parts)."""
        if not parts:
            return cls(np.zeros((0, slots, joints, 3), np.float32), centers, scales)

        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else np.concatenate(values)

        return cls(cat("keypoints"), centers, scales, cat("scores"), cat("areas"),
                   parts[0].instances, cat("psm"), cat("boxes"))


def _resize_whole_image(model: PoseNet, options: EngineOptions) -> None:
    """Apply `input_size` / `max_people` to a whole-image network (ValueError elsewhere)."""
    changes: dict = {}
    if options.input_size is not None:
        changes["image_size"] = (options.input_size, options.input_size)
    if options.max_people is not None:
        if options.max_people < 1:
            raise ValueError("--max-people must be at least 1")
        changes["max_people"] = options.max_people
    if not changes:
        return
    if not model.whole_image:
        raise ValueError("--input-size and --max-people are for whole-image networks (they "
                         "find the people themselves); a top-down network takes person boxes")
    config = replace(model.config, **changes)
    try:
        check_config(config)
    except ValueError as exc:
        raise ValueError(f"--input-size: {exc}") from None
    model.config = config


class PoseEstimator:
    """A pose network with its pre- and post-processing, on one device."""

    def __init__(
        self,
        model: PoseNet,
        keypoint_set: KeypointSet | str = "coco",
        options: EngineOptions | None = None,
        device: str | torch.device | None = None,
        scorer: PoseScorer | None = None,
        recovery: PoseEstimator | None = None,
    ) -> None:
        """`scorer`: required by `options.rescore == "psm"`, and only then. `recovery`: a
        whole-image estimator whose poses are merged with this one's (crowd recovery: people
        without a box, and the occluded person whose top-down pose copied the one in
        front)."""
        self.options = options or EngineOptions()
        if self.options.rescore not in ("keypoints", "psm"):
            raise ValueError(f"rescore {self.options.rescore!r}: expected keypoints or psm")
        if (self.options.rescore == "psm") != (scorer is not None):
            raise ValueError("rescore psm goes with a pose scorer, and a scorer with it")
        if scorer is not None and model.whole_image:
            raise ValueError("a single-stage network scores its own poses (classification × "
                             "PSM): leave out --rescore psm")
        self.scorer = scorer
        if recovery is not None and (model.whole_image or not recovery.model.whole_image):
            raise ValueError("crowd recovery merges a whole-image network's poses into a "
                             "top-down network's: give --recover a whole-image checkpoint, and "
                             "a top-down one as --weights")
        self.recovery = recovery
        _resize_whole_image(model, self.options)
        self.device = pick_device(str(device) if device is not None else None)
        self.keypoint_set = (get_keypoint_set(keypoint_set) if isinstance(keypoint_set, str)
                             else keypoint_set)
        if model.config.num_joints != self.keypoint_set.num_joints:
            raise ValueError(f"the model predicts {model.config.num_joints} joints but the "
                             f"keypoint set {self.keypoint_set.name} has "
                             f"{self.keypoint_set.num_joints}")
        self.half = self.options.half and self.device.type == "cuda"
        # On a CPU, --half is bf16 autocast (weights stay fp32; decoding casts back to fp32).
        self.bf16 = self.options.half and self.device.type == "cpu"
        if self.bf16 and autocast_dtype(self.device) is not torch.bfloat16:
            raise ValueError("half precision on this CPU: it has no native bf16 (AVX512-BF16 "
                             "or AMX), so it would be slower than fp32; leave out --half")
        self.model = model.eval().to(self.device)
        if self.half:
            self.model.half()
        self.channels_last = (self.device.type == "cpu" if self.options.channels_last is None
                              else self.options.channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        n = model.config.num_instances
        wanted = self.options.instances or n
        if not 1 <= wanted <= n:
            raise ValueError(f"instances must be between 1 and {n} for this network")
        self.lambdas = instance_lambdas(n)[:wanted].to(self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, options: EngineOptions | None = None,
                        device: str | torch.device | None = None,
                        scorer: PoseScorer | None = None,
                        recovery: PoseEstimator | None = None) -> PoseEstimator:
        """From a checkpoint; with `scorer`, that scorer rescores the poses (rescore psm);
        with `recovery`, its whole-image poses are merged in (crowd recovery)."""
        model, meta = load_checkpoint(path)
        return cls(model, meta.keypoints, options, device, scorer, recovery)

    @property
    def num_instances(self) -> int:
        return self.lambdas.shape[0]

    @property
    def batch_size(self) -> int:
        """Crops per network call: the option, capped on a CPU by the family's best size."""
        if self.device.type == "cpu" and self.model.cpu_batch:
            return min(self.options.batch_size, self.model.cpu_batch)
        return self.options.batch_size

    @property
    def kpt_thresh(self) -> float:
        """The network's default joint-confidence threshold for drawing, labels and tracking."""
        return self.model.config.kpt_thresh

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return self.model.config.image_size

    def boxes_to_center_scale(self, xywh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.input_size
        padding = self.model.crop_padding or self.options.box_padding
        centers, scales = box_to_center_scale(np.asarray(xywh, np.float64).reshape(-1, 4),
                                              w / h, padding)
        if not self.model.upscale:  # a crop smaller than the input stays at its own scale
            least = np.array([w, h], np.float32) / np.float32(PIXEL_STD)
            scales = np.maximum(scales, least)
        return centers, scales

    def crops(self, images: Sequence[np.ndarray | torch.Tensor], centers: np.ndarray,
              scales: np.ndarray, image_index: np.ndarray | None = None) -> torch.Tensor:
        """Model-ready crops of boxes (centre/scale), normalised as the network expects."""
        h, w = self.input_size
        return warp_crops(list(images), centers, scales, (w, h), image_index=image_index,
                          device=self.device, normalize=True, mean=self.model.input_mean,
                          std=self.model.input_std)

    def from_imagenet(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops normalised with ImageNet statistics -> as this network expects them."""
        return self.model.from_imagenet(crops)

    @torch.no_grad()
    def infer(self, crops: torch.Tensor) -> torch.Tensor:
        """The network's outputs (B, N, ...) for crops and every λ, flip test included:
        heatmaps (B, N, K, h, w) or keypoints (B, N, K, 3), as the family gives them. The
        network sees at most `batch_size` crops per call."""
        x = crops.to(self.device, torch.float16 if self.half else torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lams = self.lambdas.to(x.dtype)
        step = self.batch_size
        parts = []
        for start in range(0, max(len(x), 1), step):
            chunk = x[start:start + step]
            with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
                out = self.model.forward_multi(chunk, lams).float()
                flipped = (self.model.forward_multi(chunk.flip(-1), lams).float()
                           if self.options.flip_test else None)
            if flipped is not None:
                out = self.model.flip_merge(out, flipped, self.keypoint_set.flip_pairs)
            parts.append(out)
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    @torch.no_grad()
    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, N, K, h, w) heatmaps of normalised crops for every λ (heatmap networks only)."""
        if not self.model.outputs_heatmaps:
            raise MipnetError(f"{self.model.config.name or self.model.config.arch} outputs "
                              "keypoints, not heatmaps")
        return self.infer(crops)

    def decode(self, outputs: torch.Tensor, centers: np.ndarray, scales: np.ndarray
               ) -> np.ndarray:
        """(B, N, ...) outputs -> (B, N, K, 3) keypoints (x, y, confidence) in image pixels."""
        return self.model.decode(outputs, centers, scales, dark=self.options.dark)

    def candidates(self, outputs: torch.Tensor, centers: np.ndarray, scales: np.ndarray
                   ) -> CropPoses:
        """(B, N, ...) outputs -> decoded poses with what the family says about them."""
        c = self.model.decode_candidates(outputs, centers, scales, dark=self.options.dark)
        return CropPoses(c.keypoints, centers, scales, c.scores, c.areas, c.instances, c.psm,
                         c.boxes)

    def estimate(
        self,
        images: Sequence[np.ndarray | torch.Tensor],
        boxes_xywh: np.ndarray,
        image_index: np.ndarray,
    ) -> CropPoses:
        """Keypoints of every instance for boxes of several RGB images, batched."""
        centers, scales = self.boxes_to_center_scale(boxes_xywh)
        parts = []
        bs = self.options.batch_size
        for start in range(0, len(centers), bs):
            sl = slice(start, start + bs)
            crops = self.crops(images, centers[sl], scales[sl], image_index[sl])
            parts.append(self.candidates(self.infer(crops), centers[sl], scales[sl]))
        return CropPoses.join(parts, centers, scales, self.keypoint_set.num_joints,
                              self.num_instances)

    def merge(self, crop_poses: CropPoses, boxes: Sequence[Box], rows: np.ndarray) -> list[Pose]:
        """Merge the instances of the boxes `rows` (one image) into that image's poses."""
        if len(rows) == 0:
            return []
        cp = crop_poses
        n = cp.keypoints.shape[1]
        kps = cp.keypoints[rows].reshape(-1, self.keypoint_set.num_joints, 3)
        box_scores = np.repeat([boxes[r].score for r in rows], n)
        areas = (np.repeat(box_areas(cp.scales[rows]), n) if cp.areas is None
                 else cp.areas[rows].reshape(-1).astype(np.float64))
        slots = np.arange(n) if cp.instances is None else cp.instances
        instances = np.tile(slots, len(rows))
        pose_scores = None if cp.scores is None else cp.scores[rows].reshape(-1)
        psm = None if cp.psm is None else cp.psm[rows].reshape(-1)
        own_boxes = None if cp.boxes is None else cp.boxes[rows].reshape(-1, 4)
        filled = np.arange(len(kps)) if pose_scores is None else np.flatnonzero(pose_scores > 0)
        result = merge_instances(
            kps[filled], box_scores[filled], areas[filled], instances[filled],
            sigmas=self.keypoint_set.sigmas_array, decay=self.options.instance_decay,
            in_vis_thre=self.options.in_vis_thre, oks_thresh=self.options.oks_thresh,
            pose_scores=None if pose_scores is None else pose_scores[filled])
        poses = []
        for j in result.keep:
            i = filled[j]
            box = boxes[rows[i // n]]
            poses.append(Pose(keypoints=kps[i].copy(), score=float(result.scores[j]),
                              box_id=box.id, instance=int(instances[i]),
                              box_xywh=(box.xywh if box.source != "image" else
                                        [] if own_boxes is None else
                                        [float(v) for v in own_boxes[i]]),
                              area=float(areas[i]),
                              psm=None if psm is None else float(psm[i])))
        return poses

    def predict(
        self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]]
    ) -> list[list[Pose]]:
        """Merged poses for each image, given its person boxes (one network pass for all)."""
        if self.recovery is not None:
            return self.recover(images, self._predict(images, boxes))
        return self._predict(images, boxes)

    def _predict(
        self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]]
    ) -> list[list[Pose]]:
        flat = [b for per_image in boxes for b in per_image]
        index = np.repeat(np.arange(len(images)), [len(b) for b in boxes])
        if not flat:
            return [[] for _ in images]
        xywh = np.array([b.xywh for b in flat], np.float64)
        crop_poses = self.estimate(images, xywh, index)
        if self.scorer is not None:
            n = crop_poses.keypoints.shape[1]
            scores = self.scorer.score(images, [crop_poses.keypoints[index == i].reshape(
                -1, *crop_poses.keypoints.shape[2:]) for i in range(len(images))])
            crop_poses.scores = np.concatenate(scores).reshape(-1, n)
            crop_poses.psm = crop_poses.scores
        out, start = [], 0
        for per_image in boxes:
            rows = np.arange(start, start + len(per_image))
            out.append(self.merge(crop_poses, flat, rows))
            start += len(per_image)
        return out

    def recover(self, images: Sequence[np.ndarray], poses: list[list[Pose]]
                ) -> list[list[Pose]]:
        """Merge the recovery network's whole-image poses into each image's poses."""
        whole = self.recovery.predict(images, whole_image_boxes(images))
        return [recover_poses(own, extra, self.options.recover_factor,
                              self.options.recover_oks, self.keypoint_set.sigmas_array)
                for own, extra in zip(poses, whole, strict=True)]
