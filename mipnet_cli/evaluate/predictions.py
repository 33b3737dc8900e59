"""Run a pose network over a dataset's boxes and score it (`mipnet eval`, training validation).

The network runs once per box (all λ, flip test); merging and scoring are then cheap, so the
per-instance results (λ=[1,0] only, λ=[0,1] only, merged; the supplement's Table 10) and the
detector-confidence sweep (the paper's Fig. 5) reuse the same predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.results import Pose, whole_image_boxes
from ..data import KeypointDataset
from ..data.dataset import load_coco_json
from ..media.images import read_image
from ..media.writers import pose_result
from ..pose.engine import PoseEstimator
from ..pose.merge import box_areas, merge_instances
from .coco import coco_keypoint_metrics, crowdpose_metrics

SWEEP_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))


@dataclass
class DatasetPredictions:
    """Per box: keypoints of every instance and where the box came from."""

    keypoints: np.ndarray  # (B, N, K, 3) image pixels + confidence
    centers: np.ndarray  # (B, 2)
    scales: np.ndarray  # (B, 2)
    box_scores: np.ndarray  # (B,)
    image_ids: np.ndarray  # (B,)
    box_ids: np.ndarray  # (B,) annotation id, or the box's index for detection files


@torch.no_grad()
def predict_dataset(
    estimator: PoseEstimator, dataset: KeypointDataset, batch_size: int = 32, workers: int = 0,
    progress=None,
) -> DatasetPredictions:
    """Run the estimator on every box of an evaluation-mode dataset."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    parts: dict[str, list] = {k: [] for k in DatasetPredictions.__dataclass_fields__}
    task = progress.add_task("evaluating", total=len(dataset)) if progress else None
    for images, _, _, meta in loader:
        centers, scales = meta["center"].numpy(), meta["scale"].numpy()
        outputs = estimator.infer(estimator.from_imagenet(images))
        parts["keypoints"].append(estimator.decode(outputs, centers, scales))
        parts["centers"].append(centers)
        parts["scales"].append(scales)
        parts["box_scores"].append(meta["score"].numpy().astype(np.float64))
        parts["image_ids"].append(meta["image_id"].numpy())
        ann = meta["ann_ids"][:, 0].numpy()
        parts["box_ids"].append(np.where(ann >= 0, ann, meta["index"].numpy()))
        if progress:
            progress.advance(task, len(images))
    if not parts["keypoints"]:
        k, n = dataset.keypoint_set.num_joints, estimator.num_instances
        return DatasetPredictions(np.zeros((0, n, k, 3), np.float32), np.zeros((0, 2)),
                                  np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64),
                                  np.zeros(0, np.int64))
    return DatasetPredictions(**{k: np.concatenate(v) for k, v in parts.items()})


def merged_results(
    preds: DatasetPredictions,
    estimator: PoseEstimator,
    instances: tuple[int, ...] | None = None,
    min_box_score: float = 0.0,
) -> list[dict]:
    """COCO keypoint results after the MIPNet merge, per image.

    `instances` restricts the candidates (e.g. (0,) for λ=[1,0] only); `min_box_score` drops
    boxes below a detector confidence (the sweep).
    """
    opts = estimator.options
    n = preds.keypoints.shape[1]
    use = instances if instances is not None else tuple(range(n))
    results = []
    areas = box_areas(preds.scales)
    for image_id in dict.fromkeys(preds.image_ids.tolist()):
        rows = np.flatnonzero((preds.image_ids == image_id) & (preds.box_scores >= min_box_score))
        if len(rows) == 0:
            continue
        cand_rows = np.repeat(rows, len(use))
        cand_inst = np.tile(np.array(use), len(rows))
        kps = preds.keypoints[cand_rows, cand_inst]
        merged = merge_instances(
            kps, preds.box_scores[cand_rows], areas[cand_rows], cand_inst,
            sigmas=estimator.keypoint_set.sigmas_array, decay=opts.instance_decay,
            in_vis_thre=opts.in_vis_thre, oks_thresh=opts.oks_thresh)
        for i in merged.keep:
            row = cand_rows[i]
            w, h = preds.scales[row] * 200 / opts.box_padding
            cx, cy = preds.centers[row]
            results.append({
                "image_id": int(image_id), "category_id": 1,
                "keypoints": [float(v) for v in kps[i].reshape(-1)],
                "score": float(merged.scores[i]),
                "bbox": [float(cx - w / 2), float(cy - h / 2), float(w), float(h)],
                "box_id": int(preds.box_ids[row]), "instance": int(cand_inst[i]),
            })
    return results


@torch.no_grad()
def predict_scenes(estimator: PoseEstimator, ann: str, images: str, images_per_batch: int = 8,
                   progress=None) -> list[dict]:
    """COCO keypoint results of a whole-image network over every image of `ann`."""
    entries = load_coco_json(ann)["images"]
    task = progress.add_task("evaluating", total=len(entries)) if progress else None
    results = []
    for start in range(0, len(entries), images_per_batch):
        chunk = entries[start:start + images_per_batch]
        rgbs = [read_image(Path(images) / e["file_name"]) for e in chunk]
        for entry, poses in zip(chunk, estimator.predict(rgbs, whole_image_boxes(rgbs)),
                                strict=True):
            results += [{"image_id": int(entry["id"]), "category_id": 1,
                         "keypoints": [float(v) for v in p.keypoints.reshape(-1)],
                         "score": p.score} for p in poses]
        if progress:
            progress.advance(task, len(chunk))
    return results


@torch.no_grad()
def recover_results(results: list[dict], estimator: PoseEstimator, ann: str, images: str,
                    progress=None) -> list[dict]:
    """Top-down COCO results (`merged_results`) merged, image by image, with the whole-image
    poses of `estimator.recovery`, merged as `predict --recover` merges them
    (`PoseEstimator.recover`)."""
    opts = estimator.options
    by_image: dict[int, list[Pose]] = {}
    for r in results:
        w, h = r["bbox"][2:]
        by_image.setdefault(r["image_id"], []).append(Pose(
            np.asarray(r["keypoints"], np.float32).reshape(-1, 3), r["score"], r["box_id"],
            r["instance"], list(r["bbox"]), area=w * h * opts.box_padding**2))
    entries = load_coco_json(ann)["images"]
    task = progress.add_task("recovering", total=len(entries)) if progress else None
    out = []
    for entry in entries:
        image = read_image(Path(images) / entry["file_name"])
        poses = estimator.recover([image], [by_image.get(int(entry["id"]), [])])[0]
        out += [pose_result(int(entry["id"]), p) for p in poses]
        if progress:
            progress.advance(task)
    return out


def score_results(ann: str, results: list[dict], keypoint_set) -> dict:
    """COCO/OCHuman metrics, or CrowdPose metrics for the 14-joint CrowdPose set."""
    if keypoint_set.name == "crowdpose":
        return crowdpose_metrics(ann, results, keypoint_set)
    return coco_keypoint_metrics(ann, results, keypoint_set)


def score(dataset: KeypointDataset, results: list[dict]) -> dict:
    """`score_results` for the annotation file of a dataset."""
    return score_results(dataset.ann_file, results, dataset.keypoint_set)


def evaluate_predictions(
    preds: DatasetPredictions, estimator: PoseEstimator, dataset: KeypointDataset,
    per_instance: bool = True,
) -> dict[str, dict]:
    """Metrics of the merged results and, optionally, of each instance alone."""
    out = {"merged": score(dataset, merged_results(preds, estimator))}
    if per_instance and estimator.num_instances > 1:
        for i in range(estimator.num_instances):
            out[f"instance{i}"] = score(dataset, merged_results(preds, estimator, (i,)))
    return out


def confidence_sweep(
    preds: DatasetPredictions, estimator: PoseEstimator, dataset: KeypointDataset,
    thresholds: tuple[float, ...] = SWEEP_THRESHOLDS,
) -> list[tuple[float, dict]]:
    """AP when boxes below each detector-confidence threshold are dropped (paper Fig. 5)."""
    return [(t, score(dataset, merged_results(preds, estimator, min_box_score=t)))
            for t in thresholds]
