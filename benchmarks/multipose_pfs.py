"""The pose filtering and scoring cascade on the frozen MoveNet MultiPose: the paper's
ablations (Tables 1-2) at this scale, on held-out data, side by side in one run.

Rows, each at the same input size (384, flip test on, up to 20 people, small images not
enlarged: the shipped settings, against which "as published" is measured in multipose.py):
- MultiPose with no trained heads (our decoding of its heads, its own person score);
- + soft-NMS of the people's boxes;
- the pose score: its own score, the centre heatmap alone (the "centerness" of a CenterNet
  head), centre × PSM, the PSM alone (a PSM trained alone, no refinement);
- + OKS-Filter refinement (refinement and PSM trained together), and the same refinement
  trained on every first-stage pose (no OKS-Filter).
The trained rows reuse the people cached by `mipnet train configs/multipose_pfs.toml` (run it
first). Held out: the composites' val split (people never seen in training), the mmpose
COCO / OCHuman / CrowdPose samples; coco_mini's photos hold the people that the training
composites were cut from (its train split), so its row is not held out for the trained heads.

Usage (from the repository root):
    python benchmarks/multipose_pfs.py [--epochs 40]
Writes benchmarks/multipose_pfs.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from multipose import SETS, metrics, whole_image  # noqa: E402
from pfs_vs_top_down import images_of  # noqa: E402
from real_networks import crowdpose_as_coco17  # noqa: E402

from mipnet_cli.checkpoints.format import load_checkpoint  # noqa: E402
from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.core.keypoints import COCO17  # noqa: E402
from mipnet_cli.media.images import read_image  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402
from mipnet_cli.train.multipose import MultiPoseTrainConfig, MultiPoseTrainer  # noqa: E402

CONFIG = ROOT / "configs" / "multipose_pfs.toml"
CACHE = ROOT / "runs" / "multipose_pfs" / "cache_train.pt"
RUNS = ROOT / "runs" / "multipose_ablation"
TRAINED = {  # run -> (refine, psm, oks_filter)
    "psm": (False, True, 0.3),
    "refine+psm": (True, True, 0.3),
    "refine (no OKS-Filter)+psm": (True, True, 0.0),
}


def train(name: str, refine: bool, psm: bool, oks_filter: float, epochs: int, out: Path):
    """One run of the cascade (the cached people copied in), its best model; a finished run
    in `out` is reused."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "best.safetensors").is_file() and (out / "log.jsonl").is_file():
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        best = max((r for r in log if "val" in r), key=lambda r: r["val"]["AP"])
        return load_checkpoint(out / "best.safetensors")[0], best["epoch"]
    if CACHE.is_file():
        shutil.copy(CACHE, out / "cache_train.pt")
    config = MultiPoseTrainConfig.load(CONFIG, [
        f"refine={str(refine).lower()}", f"psm={str(psm).lower()}", f"oks_filter={oks_filter}",
        f"epochs={epochs}", f'out_dir="{out}"'])
    history = MultiPoseTrainer(config).fit()
    best = max((r for r in history if "val" in r), key=lambda r: r["val"]["AP"])
    print(name, "best epoch", best["epoch"], "val AP", round(best["val"]["AP"], 4), flush=True)
    model, _ = load_checkpoint(out / "best.safetensors")
    return model, best["epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "multipose_pfs.json")
    args = parser.parse_args()
    report: dict = {"machine": cpu_model(), "threads": torch.get_num_threads(),
                    "input_size": 384, "flip": True, "max_people": 20, "rows": {}}
    published, _ = load_checkpoint(get_entry("movenet-multipose-coco").local_path())
    with tempfile.TemporaryDirectory() as tmp:
        models = {"published": published}
        epochs = {}
        for name, (refine, psm, oks_filter) in TRAINED.items():
            models[name], epochs[name] = train(name, refine, psm, oks_filter, args.epochs,
                                               RUNS / name.replace(" ", "_"))
        report["best_epochs"] = epochs
        rows = {
            "MultiPose, shipped settings (no trained heads)": ("published", {}),
            "+ soft-NMS": ("published", {"soft_nms": True}),
            "score: centre heatmap (centerness)": ("published", {"pose_score": "centre"}),
            "score: PSM alone": ("psm", {"pose_score": "psm_only"}),
            "score: centre x PSM": ("psm", {"pose_score": "psm"}),
            "score: centre x PSM, + soft-NMS": ("psm", {"pose_score": "psm",
                                                        "soft_nms": True}),
            "+ OKS-Filter refinement, own score": ("refine+psm", {"pose_score": "own"}),
            "+ OKS-Filter refinement, centre x PSM": ("refine+psm", {"pose_score": "psm"}),
            "refinement without OKS-Filter, centre x PSM": ("refine (no OKS-Filter)+psm",
                                                            {"pose_score": "psm"}),
        }
        sets = {}
        for name, (ann, folder) in SETS.items():
            if not ann.is_file():
                continue
            if name == "crowdpose":
                ann = crowdpose_as_coco17(ann, Path(tmp) / "crowdpose_coco17.json")
            items = images_of(ann, folder)
            sets[name] = (ann, [i for i, _ in items], [read_image(p) for _, p in items])
        for label, (source, changes) in rows.items():
            model = models[source]
            settings = {"image_size": (384, 384), "max_people": 20, "soft_nms": False,
                        "pose_score": "auto"} | changes
            model.config = replace(model.config, **settings)
            est = PoseEstimator(model, "coco", EngineOptions(flip_test=True))
            row = {}
            for name, (ann, ids, images) in sets.items():
                poses, secs = whole_image(est, images)
                row[name] = metrics(ann, ids, poses, COCO17) | {"s_per_image": round(secs, 4)}
            report["rows"][label] = row
            print(label, json.dumps({k: v["AP"] for k, v in row.items()}), flush=True)
            write_json(args.json, report, indent=1)


if __name__ == "__main__":
    main()
