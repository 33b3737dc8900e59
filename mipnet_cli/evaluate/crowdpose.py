"""CrowdPose keypoint evaluation (the benchmark's `keypoints_crowd` rules) on pycocotools.

xtcocotools, which implements these rules, ships binaries built against numpy 1 that fail to
import under numpy 2; this module reproduces its `COCOeval(gt, dt, 'keypoints_crowd', sigmas,
use_area=False)` numbers on top of pycocotools' matching and accumulation:

- OKS scale: the ground-truth box area × 0.53 instead of the annotated area;
- a ground truth with `num_keypoints` 0 (or `iscrowd`) is ignored, as in pycocotools;
- a detection without any keypoint confidence > 0 is dropped;
- at most 20 detections per image, one area range ('all');
- AP easy / medium / hard: AP over the images with `crowdIndex` < 0.2, < 0.8, >= 0.8, taken as
  the plain mean of the precision array (no-ground-truth entries, -1, included) rounded to 4
  decimals, as the CrowdPose code does (-1 for a split without images).

Only numpy and pycocotools are imported here.
"""

from __future__ import annotations

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

CROWD_SPLITS = (0.2, 0.8)  # crowdIndex thresholds between easy, medium and hard
AREA_FACTOR = 0.53  # OKS area = box w × h × 0.53 when the annotations carry no usable area
MAX_DETS = 20


class CrowdPoseEval(COCOeval):
    """`COCOeval` for CrowdPose. `coco_gt.dataset['images']` must carry `crowdIndex`."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO, sigmas: np.ndarray) -> None:
        super().__init__(coco_gt, coco_dt, "keypoints")
        self.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        self.params.maxDets = [MAX_DETS]
        self.params.areaRng = [[0.0, 1e5**2]]
        self.params.areaRngLbl = ["all"]
        self.stats_names = ("AP", "AP50", "AP75", "AR", "AR50", "AR75",
                            "AP_easy", "AP_medium", "AP_hard")

    def _prepare(self) -> None:
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:
                g["area"] = g["bbox"][2] * g["bbox"][3] * AREA_FACTOR
        for key, dts in list(self._dts.items()):
            self._dts[key] = [d for d in dts if np.any(np.asarray(d["keypoints"])[2::3] > 0)]

    def _mean(self, precision: bool, iou: float | None = None) -> float:
        s = self.eval["precision"][..., 0, 0] if precision else self.eval["recall"][..., 0, 0]
        if iou is not None:
            s = s[np.isclose(self.params.iouThrs, iou)]
        valid = s[s > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def split_ap(self, image_ids: list[int]) -> float:
        """The CrowdPose per-split AP over these images (evaluates them again)."""
        self.params.imgIds = image_ids
        self.evaluate()
        self.accumulate()
        return round(float(np.mean(self.eval["precision"][:, :, :, 0, :])), 4)

    def summarize(self) -> None:
        """Fill `stats` (9 values, `stats_names` order) and print them as CrowdPose does."""
        stats = [self._mean(True), self._mean(True, 0.5), self._mean(True, 0.75),
                 self._mean(False), self._mean(False, 0.5), self._mean(False, 0.75)]
        first, second = CROWD_SPLITS
        splits: tuple[list[int], list[int], list[int]] = ([], [], [])
        for img in self.cocoGt.dataset["images"]:
            c = img["crowdIndex"]
            splits[0 if c < first else 1 if c < second else 2].append(img["id"])
        all_ids = list(self.params.imgIds)
        stats += [self.split_ap(ids) for ids in splits]
        self.params.imgIds = all_ids
        self.stats = np.array(stats)
        for name, value in zip(self.stats_names, self.stats, strict=True):
            print(f" {name:<10} @[ maxDets={MAX_DETS} ] = {value:0.3f}")
