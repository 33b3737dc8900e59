"""Training the pose filtering and scoring cascade on a frozen MoveNet MultiPose (`mipnet train`
with arch "movenet_multipose").

The converted network stays as Google trained it; only `PoseHeads` learn: the refinement
(joint corrections from the FPN features at the first-stage joints) and the PSM (the OKS of
the refined pose). With the network frozen, every training image goes through it once: its
decoded people, the features at their joints and their best-matching ground truth are cached
in the run folder (`cache_*.pt`), and the epochs run over those people. The refinement learns
only from first-stage poses whose OKS with a ground-truth person passes `oks_filter`, weighted
by that OKS (the paper's OKS-Filter); the PSM learns the OKS of every refined pose (binary
cross-entropy). Validation runs the whole model as `mipnet predict` does and keeps the best
epoch by AP.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints.format import load_checkpoint, save_checkpoint
from ..checkpoints.zoo import resolve_pose_weights
from ..core.errors import MipnetError
from ..core.files import atomic_path
from ..core.geometry import affine_matrices, affine_transform_points
from ..core.keypoints import COCO17
from ..core.results import whole_image_boxes
from ..data.dataset import load_coco_json
from ..evaluate.predictions import predict_scenes, score_results
from ..media.images import read_image
from ..models import build_model
from ..models.decode import flip_permutation
from ..models.movenet_multipose import MAPS, MoveNetMultiPose, PoseHeads, decode_multipose
from ..pose.engine import EngineOptions, PoseEstimator
from .base import DataPaths, config_arch, portable_settings, read_settings


@dataclass
class MultiPoseTrainConfig(DataPaths):
    """A run of the cascade on a frozen MultiPose; TOML files and `--set key=value` fill it."""

    arch: str = "movenet_multipose"
    init: str = "movenet-multipose-coco"  # the converted network: a file or a zoo name
    input_size: int = 384
    max_people: int = 20
    refine: bool = True
    psm: bool = True
    oks_filter: float = 0.3
    mirror: bool = True  # each training image also mirrored (twice the people)
    epochs: int = 40
    batch_size: int = 256  # people per step
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_every: int = 5
    flip_test: bool = True
    out_dir: str = "runs/multipose_pfs"
    config_file: str | None = None

    PATHS: ClassVar[tuple[str, ...]] = ("train_ann", "train_images", "val_ann", "val_images",
                                        "out_dir")

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> MultiPoseTrainConfig:
        config = cls(**read_settings(cls, path, overrides, paths=cls.PATHS))
        if not (config.refine or config.psm):
            raise MipnetError("nothing to train: set refine or psm (or both) to true")
        if config.input_size % 32 or not 32 <= config.input_size <= 2048:
            raise MipnetError(f"input_size {config.input_size}: a multiple of 32 up to 2048")
        return config


def frozen_model(config: MultiPoseTrainConfig) -> MoveNetMultiPose:
    """The converted MultiPose with fresh pose heads (refine / PSM as configured)."""
    base, _ = load_checkpoint(resolve_pose_weights(config.init))
    if not isinstance(base, MoveNetMultiPose):
        raise MipnetError(f"{config.init}: not a MoveNet MultiPose checkpoint")
    model = build_model("movenet_multipose", image_size=(config.input_size,) * 2,
                        max_people=config.max_people, feature_align=config.refine,
                        quality_score=config.psm)
    own = {k: v for k, v in base.state_dict().items() if not k.startswith("pose_heads.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    assert not unexpected and all(k.startswith("pose_heads.") for k in missing)
    return model.eval()


def _oks(pred: torch.Tensor, gt: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """OKS (N,) of poses (N, K, 2) against ground truths (N, K, 3: x, y, v) of `area`, all in
    the same pixels; 0 where the ground truth has no labelled joint."""
    var = torch.as_tensor(COCO17.sigmas_array, dtype=pred.dtype, device=pred.device) * 2
    d2 = ((pred - gt[..., :2]) ** 2).sum(-1)
    e = d2 / (var**2) / (2 * area.clamp(min=1)[:, None])
    seen = (gt[..., 2] > 0).float()
    return (torch.exp(-e) * seen).sum(-1) / seen.sum(-1).clamp(min=1)


@torch.no_grad()
def cache_people(model: MoveNetMultiPose, ann: str, images: str, mirror: bool,
                 progress=None) -> dict[str, torch.Tensor]:
    """The decoded people of every image (and of its mirror image) with their heads' inputs,
    first-stage joints (input pixels), centre scores and their best-matching ground truth."""
    est = PoseEstimator(model, "coco", EngineOptions(flip_test=True))
    data = load_coco_json(ann)
    people: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0:
            people.setdefault(a["image_id"], []).append(a)
    size = model.config.image_size[0]
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in
                                            ("inputs", "joints", "gt", "area", "first_oks")}
    task = progress.add_task("caching", total=len(data["images"])) if progress else None
    for entry in data["images"]:
        rgb = read_image(Path(images) / entry["file_name"])
        for flipped in (False, True) if mirror else (False,):
            image = rgb[:, ::-1].copy() if flipped else rgb
            box = np.array([whole_image_boxes([image])[0][0].xywh])
            centers, scales = est.boxes_to_center_scale(box)
            out = est.infer(est.crops([image], centers, scales))[:, 0]
            poses = decode_multipose(out[:, :MAPS], model.config.max_people)
            inputs = PoseHeads.inputs(out[:, MAPS:], poses)[0]
            kps = poses["keypoints"][0]
            joints = torch.stack([kps[..., 1] * size - 0.5, kps[..., 0] * size - 0.5], -1)
            forward = affine_matrices(centers, scales, (size, size))[0]
            ratio = size / (scales[0, 0] * 200)
            gts, areas = [], []
            for a in people.get(entry["id"], []):
                k = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
                if flipped:
                    k = k[flip_permutation(len(k), COCO17.flip_pairs)]
                    k[:, 0] = np.where(k[:, 2] > 0, entry["width"] - k[:, 0], 0)
                xy = affine_transform_points(k[:, :2], forward)
                gts.append(np.concatenate([xy, k[:, 2:]], 1))
                areas.append(a.get("area", a["bbox"][2] * a["bbox"][3]) * ratio**2)
            n = len(joints)
            gt = torch.zeros(n, 17, 3)
            area = torch.zeros(n)
            best = torch.zeros(n)
            if gts:
                g = torch.as_tensor(np.stack(gts), dtype=torch.float32)  # (G, K, 3)
                ga = torch.as_tensor(areas, dtype=torch.float32)
                oks = torch.stack([_oks(joints, g[i].expand(n, -1, -1), ga[i].expand(n))
                                   for i in range(len(g))], 1)  # (P, G)
                best, which = oks.max(1)
                gt, area = g[which], ga[which]
            keep = poses["centre_scores"][0] > model.config.score_thresh
            for key, value in (("inputs", inputs), ("joints", joints), ("gt", gt),
                               ("area", area), ("first_oks", best)):
                parts[key].append(value[keep])
        if progress:
            progress.advance(task)
    return {k: torch.cat(v) for k, v in parts.items()}


def head_loss(heads: PoseHeads, batch: dict[str, torch.Tensor], oks_filter: float,
              size: int, cells: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Refinement (OKS-Filter, OKS-weighted L1 in cells) + PSM (BCE against the refined pose's
    OKS) on a batch of cached people."""
    x, joints, gt = batch["inputs"], batch["joints"], batch["gt"]
    terms: dict[str, float] = {}
    loss = x.new_zeros(())
    refined = joints
    if heads.refine is not None:
        delta = heads.refine(x).unflatten(-1, (17, 2))  # (dy, dx) in cells
        refined = joints + delta.flip(-1) * (size / cells)
        passed = (batch["first_oks"] >= oks_filter).float() * batch["first_oks"]
        seen = (gt[..., 2] > 0).float() * passed[:, None]
        l1 = ((refined - gt[..., :2]).abs().sum(-1) / (size / cells) * seen).sum()
        refine_loss = l1 / seen.sum().clamp(min=1)
        loss = loss + refine_loss
        terms["refine"] = refine_loss.item()
    if heads.psm is not None:
        target = _oks(refined.detach(), gt, batch["area"])
        psm_loss = F.binary_cross_entropy_with_logits(heads.psm(x)[..., 0], target)
        loss = loss + psm_loss
        terms["psm"] = psm_loss.item()
    return loss, terms


class MultiPoseTrainer:
    """One run in `config.out_dir`: best.safetensors (the whole model), log.jsonl, and the
    cached people of each split (reused by a later run with the same network and data)."""

    def __init__(self, config: MultiPoseTrainConfig) -> None:
        self.config = config
        self.out = Path(config.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        self.model = frozen_model(config)
        self.size = config.input_size
        self.history: list[dict] = []

    def cached(self, progress=None) -> dict[str, torch.Tensor]:
        c = self.config
        key = json.dumps([c.init, c.train_ann, c.train_images, c.input_size, c.max_people,
                          c.mirror])
        path = self.out / "cache_train.pt"
        if path.is_file():
            stored = torch.load(path, weights_only=True)
            if stored.get("key") == key:
                return stored["people"]
        people = cache_people(self.model, c.train_ann, c.train_images, c.mirror, progress)
        with atomic_path(path) as tmp:
            torch.save({"key": key, "people": people}, tmp)
        return people

    def validate(self, progress=None) -> dict:
        c = self.config
        est = PoseEstimator(self.model, "coco", EngineOptions(flip_test=c.flip_test))
        results = predict_scenes(est, c.val_ann, c.val_images or c.train_images,
                                 progress=progress)
        metrics = score_results(c.val_ann, results, COCO17)
        return {k: v for k, v in metrics.items() if k != "log"}

    def fit(self, progress=None) -> list[dict]:
        c = self.config
        people = self.cached(progress)
        heads = self.model.pose_heads
        opt = torch.optim.AdamW(heads.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.epochs)
        cells = self.size // 4
        n = len(people["inputs"])
        best = -1.0
        generator = torch.Generator().manual_seed(c.seed)
        start = time.perf_counter()
        for epoch in range(1, c.epochs + 1):
            heads.train()
            order = torch.randperm(n, generator=generator)
            sums: dict[str, float] = {}
            steps = 0
            for s in range(0, n, c.batch_size):
                idx = order[s:s + c.batch_size]
                loss, terms = head_loss(heads, {k: v[idx] for k, v in people.items()},
                                        c.oks_filter, self.size, cells)
                opt.zero_grad()
                loss.backward()
                opt.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
            sched.step()
            heads.eval()
            record = {"epoch": epoch, **{k: round(v / max(steps, 1), 5) for k, v in sums.items()},
                      "time_s": round(time.perf_counter() - start, 1)}
            if c.val_ann and (epoch % c.val_every == 0 or epoch == c.epochs):
                record["val"] = self.validate(progress)
                if record["val"]["AP"] > best:
                    best = record["val"]["AP"]
                    self.save(self.out / "best.safetensors", record)
            self.history.append(record)
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.save(self.out / "last.safetensors", self.history[-1])
        return self.history

    def save(self, path: Path, record: dict) -> None:
        c = self.config
        provenance = {"trained_with": "mipnet train (MoveNet MultiPose frozen; pose heads only)",
                      "init": str(c.init), "epoch": record["epoch"],
                      "val": record.get("val"), "config": portable_settings(c),
                      "date": time.strftime("%Y-%m-%d")}
        save_checkpoint(path, self.model, "coco", provenance)


def is_multipose_config(path: str | Path | None, overrides: list[str]) -> bool:
    """Whether a training config trains the cascade on MoveNet MultiPose."""
    return config_arch(path, overrides) == "movenet_multipose"
