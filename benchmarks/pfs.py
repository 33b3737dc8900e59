"""The single-stage family's ablations at this project's scale (the paper's Tables 1 and 2).

Every variant trains from configs/pfs_nano.toml with the same data, seed and epochs; only the
switches differ. Table 1 adds, in turn, feature alignment (the refinement cascade with the
OKS-Filter), centre sampling and the P3 heatmap loss to a baseline (dense regression, all
locations in the person box positive, no quality branch). Table 2 trains the full model with no
quality branch, with centerness and with PSM, and tests each with and without its quality
score. Metrics on the held-out composites (people never seen in training).

Usage (from the repository root; runs resume, finished ones are skipped):
    python benchmarks/pfs.py [--epochs 6] [--out runs/pfs_ablation]
Writes benchmarks/pfs.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mipnet_cli.checkpoints.format import load_checkpoint  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.core.keypoints import COCO17  # noqa: E402
from mipnet_cli.evaluate.predictions import predict_scenes, score_results  # noqa: E402
from mipnet_cli.models.pfs_loss import oks_matrix  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402
from mipnet_cli.train.pfs import PfsTrainConfig, PfsTrainer  # noqa: E402

CONFIG = ROOT / "configs" / "pfs_nano.toml"
KEYS = ("AP", "AP50", "AP75", "APM", "APL")
VARIANTS = {  # name: settings overrides
    "baseline": ["feature_align=false", "center_sampling=false", "heatmap=false",
                 'quality="none"'],
    "+FA": ["center_sampling=false", "heatmap=false", 'quality="none"'],
    "+FA+CS": ["heatmap=false", 'quality="none"'],
    "+FA+CS+HM": ['quality="none"'],
    "+centerness": ['quality="centerness"'],
    "+PSM": ['quality="psm"'],
}


def train(name: str, overrides: list[str], out: Path, epochs: int) -> Path:
    folder = out / name.replace("+", "p_")
    config = PfsTrainConfig.load(CONFIG, [*overrides, f"epochs={epochs}",
                                                 f'out_dir="{folder}"'])
    trainer = PfsTrainer(config)
    if trainer.state_path.is_file():
        trainer.resume()
    if trainer.epoch < epochs:
        print(f"training {name}: epochs {trainer.epoch + 1}..{epochs}", flush=True)
        trainer.fit()
    return folder / "last.safetensors"


def best_oks(ann: str, results: list[dict]) -> np.ndarray:
    """For every annotated person, the OKS of the predicted pose closest to them: a measure of
    pose quality that, unlike AP, still moves when few poses reach OKS 0.5."""
    data = json.loads(Path(ann).read_text())
    sigmas = torch.as_tensor(COCO17.sigmas_array, dtype=torch.float32)
    by_image: dict[int, list] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r["keypoints"])
    best = []
    for a in data["annotations"]:
        if not a.get("num_keypoints", 1) or a.get("iscrowd"):
            continue
        poses = by_image.get(a["image_id"])
        if not poses:
            best.append(0.0)
            continue
        person = torch.tensor(a["keypoints"], dtype=torch.float32).view(1, -1, 3)
        pred = torch.tensor(poses, dtype=torch.float32).view(len(poses), -1, 3)[..., :2]
        area = torch.tensor([float(a["area"])])
        best.append(float(oks_matrix(pred, person, area, sigmas).max()))
    return np.asarray(best)


def evaluate(weights: Path, use_quality: bool) -> dict:
    model, meta = load_checkpoint(weights)
    model.use_quality = use_quality
    est = PoseEstimator(model, meta.keypoints, EngineOptions(flip_test=True), "cpu")
    config = PfsTrainConfig.load(CONFIG)
    results = predict_scenes(est, config.val_ann, config.val_images)
    metrics = score_results(config.val_ann, results, est.keypoint_set)
    oks = best_oks(config.val_ann, results)
    return {k: round(metrics[k], 4) for k in KEYS if k in metrics} | {
        "median best OKS": round(float(np.median(oks)), 4),
        "people found (OKS > 0.5)": round(float((oks > 0.5).mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "pfs_ablation")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "pfs.json")
    args = parser.parse_args()
    rows = {}
    for name, overrides in VARIANTS.items():
        weights = train(name, overrides, args.out, args.epochs)
        quality = 'quality="none"' not in overrides
        rows[name] = {"test cls": evaluate(weights, False)}
        if quality:
            rows[name]["test cls x quality"] = evaluate(weights, True)
        provenance = load_checkpoint(weights)[1].provenance
        rows[name]["train_time_s"] = provenance.get("train_time_s")
        print(name, json.dumps(rows[name]), flush=True)
        write_json(args.json, {"machine": cpu_model(), "epochs": args.epochs,
                               "config": str(CONFIG.relative_to(ROOT)), "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
