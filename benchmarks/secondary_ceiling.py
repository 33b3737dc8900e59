"""How far can λ take MoveNet? The ceiling of the secondary instance with the converted heads.

In MoveNet only the centre heatmap says whose pose a crop decodes: the joint heatmaps, offsets
and dense regressions describe everyone in the crop. A λ = [0, 1] instance that learnt a
perfect centre map for the other person would decode from that person's centre. This script
imposes that centre (the mean of the other person's labelled joints, in heatmap cells) on the
converted networks' maps and counts, over the overlapping people (box IoU > 0.3 with another,
as `real_mipnet.py` counts them), how often the pose matches an overlapping person (OKS > 0.5).
For comparison: MoveNet's own decoding, and the box's own person decoded from its GT centre.
From the other person's GT centre, two other decodings test whether a different rule lifts the
ceiling: the regressed joints alone (no heatmap peak), and the heatmap peak weighted by the
squared distance to the regressed joint (a weaker pull to other people's joints than MoveNet's
1 / (distance + 1.8)). No flip test (the imposed centre is in the unmirrored crop).

Usage (from the repository root):
    python benchmarks/secondary_ceiling.py [--json benchmarks/secondary_ceiling.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from occlusion import iou  # noqa: E402
from real_mipnet import SETS, oks, overlap_cases  # noqa: E402

from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.geometry import affine_matrices, affine_transform_points  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.media.images import read_image  # noqa: E402
from mipnet_cli.models.movenet import CENTER_BIAS, decode_movenet  # noqa: E402
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator  # noqa: E402

MODELS = ("movenet-lightning-coco", "movenet-thunder-coco")


def centre_cell(person: np.ndarray, to_crop: np.ndarray, cell: float, cells: int
                ) -> torch.Tensor:
    """(1, 2) (row, column): the heatmap cell of the mean of a person's labelled joints."""
    xy = affine_transform_points(person[person[:, 2] > 0, :2], to_crop).mean(0)
    rc = np.clip(np.floor((xy[::-1] + 0.5) / cell), 0, cells - 1)
    return torch.tensor(rc[None], dtype=torch.long)


def decode_variant(maps: dict[str, torch.Tensor], size: int, centre: torch.Tensor,
                   rule: str) -> torch.Tensor:
    """(1, 17, 3) joints decoded from an imposed centre cell by `rule`: "regression" (the
    regressed positions) or "squared snap" (heatmap / (distance² + 1.8), then the offsets)."""
    heat = maps["kpt_heatmap"].float()
    _, k, h, w = heat.shape
    cy, cx = centre[0]
    reg = maps["kpt_regress"].float()[0, :, cy, cx].view(k, 2)
    ry, rx = cy + reg[:, 0], cx + reg[:, 1]
    if rule == "regression":
        xy = torch.stack([rx, ry], -1)
        score = torch.ones(k, 1)
    else:
        ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        dist2 = (ys - ry.view(k, 1, 1)) ** 2 + (xs - rx.view(k, 1, 1)) ** 2
        idx = (heat[0] / (dist2 + CENTER_BIAS)).flatten(1).argmax(1)
        jy, jx = idx // w, idx % w
        joints = torch.arange(k)
        off = maps["kpt_offset"].float()[0].view(k, 2, h, w)[joints, :, jy, jx]
        xy = torch.stack([jx + off[:, 1], jy + off[:, 0]], -1)
        score = heat[0, joints, jy, jx].view(k, 1)
    # Cell units to input pixels, counted from the first pixel's centre (as decode_movenet).
    xy = xy * torch.tensor([size / w, size / h]) - 0.5
    return torch.cat([xy, score], -1)[None]


def ceiling(entry: str, ann: Path, images: Path) -> dict:
    """Hit rates of one converted network on the overlapping people of one set."""
    est = PoseEstimator.from_checkpoint(get_entry(entry).local_path(),
                                        EngineOptions(flip_test=False), "cpu")
    model, size = est.model, est.input_size[0]
    counts = dict.fromkeys(("decoded on its own person", "decoded on another person",
                            "own GT centre on its own person",
                            "other's GT centre on another person",
                            "other's GT centre, regressed joints only",
                            "other's GT centre, squared-distance snap"), 0)
    cases = 0
    for name, anns, overlapping in overlap_cases(ann):
        image = read_image(images / name)
        boxes = np.array([a["bbox"] for a in anns], np.float64)
        gts = [np.asarray(a["keypoints"], float).reshape(-1, 3) for a in anns]
        for i, others in enumerate(overlapping):
            if not others:
                continue
            centers, scales = est.boxes_to_center_scale(boxes[[i]])
            crops = est.crops([image], centers, scales, np.zeros(1, np.int64))
            with torch.no_grad():
                maps = model.head_maps(model.trunk(crops.to(torch.float32)), None)
            cells = maps["center"].shape[-1]
            to_crop = affine_matrices(centers, scales, (size, size))[0]
            to_image = affine_matrices(centers, scales, (size, size), inv=True)[0]
            nearest = max(others, key=lambda j: iou(boxes[i], boxes[j]))
            trials = {"decoded on its own person": (None, [i]),
                      "decoded on another person": (None, others),
                      "own GT centre on its own person":
                          (centre_cell(gts[i], to_crop, size / cells, cells), [i]),
                      "other's GT centre on another person":
                          (centre_cell(gts[nearest], to_crop, size / cells, cells), others)}
            other_centre = trials["other's GT centre on another person"][0]
            variants = {"other's GT centre, regressed joints only": "regression",
                        "other's GT centre, squared-distance snap": "squared snap"}
            trials.update({key: (other_centre, others) for key in variants})
            cases += 1
            for key, (centre, targets) in trials.items():
                decoded = (decode_variant(maps, size, centre, variants[key]) if key in variants
                           else decode_movenet(maps, size, centre))
                pose = decoded[0].numpy().astype(np.float64)
                pose[:, :2] = affine_transform_points(pose[:, :2], to_image)
                counts[key] += max(oks(pose, gts[j], anns[j]["area"]) for j in targets) > 0.5
    return {"cases": cases, **{k: round(v / max(cases, 1), 4) for k, v in counts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "secondary_ceiling.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result: dict = {"machine": cpu_model(), "date": time.strftime("%Y-%m-%d"), "rates": {}}
    for entry in MODELS:
        for name in ("composites", "ochuman"):
            result["rates"][f"{entry} | {name}"] = r = ceiling(entry, *SETS[name])
            print(entry, name, r, flush=True)
    write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
