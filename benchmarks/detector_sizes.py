"""The shipped YOLOX-Nano person detector at several input sizes (`--det-size`).

YOLOX-Nano was published at 416×416. A larger letterbox finds small, distant people; a smaller
one suits close-ups; several sizes, merged by NMS, aim at both. For each setting this measures,
on the real annotated sets in ../shared/realdata:

- person-box AP / AP50 / APm / APl / AR100 / recall at IoU 0.5 (pycocotools, boxes >= 0.01);
- pose AP of the default pipeline (MoveNet Thunder, flip test) on those boxes (>= 0.05);
- on the first frames of vtest.avi (768×576 pedestrians), the boxes found (>= 0.5, the
  `predict` default) and the detector's time per frame, all settings interleaved round-robin
  in one process (median; ratio to the 416 setting, median of the per-round ratios).

Usage (from the repository root):
    python benchmarks/detector_sizes.py [--frames 20] [--rounds 5] [--json PATH]
Writes benchmarks/detector_sizes.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_networks import REAL, SETS, crowdpose_as_coco17, pose_ap  # noqa: E402

from mipnet_cli.bench.timing import Clock, _median, _paired_ratio, run_interleaved  # noqa: E402
from mipnet_cli.checkpoints.zoo import get_entry  # noqa: E402
from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.hardware import cpu_model  # noqa: E402
from mipnet_cli.detect.registry import open_detector  # noqa: E402
from mipnet_cli.train.detector import box_metrics, detect_dataset  # noqa: E402

SETTINGS = ((416,), (640,), (832,), (416, 832))
BOX_KEYS = ("AP", "AP50", "APm", "APl", "AR100", "recall50")
VIDEO = REAL / "video" / "vtest.avi"


def yolox(sizes: tuple[int, ...], score_thresh: float):
    entry = get_entry("yolox-nano-coco")
    return open_detector(entry.builder, entry.local_path(), score_thresh=score_thresh,
                         device="cpu", sizes=sizes)


def label(sizes: tuple[int, ...]) -> str:
    return "+".join(str(s) for s in sizes)


def frames(count: int) -> list:
    with av.open(str(VIDEO)) as container:
        return [f.to_ndarray(format="rgb24")
                for f in itertools.islice(container.decode(video=0), count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "detector_sizes.json")
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"{REAL} is absent: this benchmark needs ../shared/realdata")
    result: dict = {"machine": cpu_model(), "date": time.strftime("%Y-%m-%d"), "boxes": {},
                    "pose": {}, "video": {}}
    with tempfile.TemporaryDirectory() as tmp:
        pose_ann = {name: ann for name, (ann, _) in SETS.items()}
        pose_ann["crowdpose"] = crowdpose_as_coco17(SETS["crowdpose"][0],
                                                    Path(tmp) / "crowdpose_coco17.json")
        for sizes in SETTINGS:
            detector = yolox(sizes, 0.01)
            for name, (ann, images) in SETS.items():
                data, dets = detect_dataset(detector, ann, images)
                m = box_metrics(data, dets)
                key = f"{label(sizes)} | {name}"
                result["boxes"][key] = {k: round(m[k], 4) for k in BOX_KEYS}
                det_file = Path(tmp) / "dets.json"
                write_json(det_file, [d for d in dets if d["score"] >= 0.05])
                p = pose_ap("movenet-thunder-coco", pose_ann[name], images, det_file, True)
                result["pose"][key] = p
                print(f"{key:24s} boxes AP {m['AP']:.3f} AP50 {m['AP50']:.3f} "
                      f"recall50 {m['recall50']:.3f} | pose AP {p['AP']:.3f} AR {p['AR']:.3f}",
                      flush=True)
    clips = frames(args.frames)
    detectors = {label(s): yolox(s, 0.5) for s in SETTINGS}
    for name, detector in detectors.items():
        found = [len(b) for b in detector.detect(clips)]
        result["video"][name] = {"boxes_per_frame": round(sum(found) / len(found), 2)}
    times = run_interleaved({n: (lambda d=d: [d.detect([f]) for f in clips])
                             for n, d in detectors.items()}, args.rounds, 1, Clock(
                                 detectors["416"].device))
    base = label(SETTINGS[0])
    for name, t in times.items():
        result["video"][name].update(ms_per_frame=round(1000 * _median(t) / len(clips), 1),
                                     ratio_to_416=round(_paired_ratio(t, times[base]), 2))
        print(f"vtest {name:8s} {result['video'][name]}", flush=True)
    result["video_frames"] = len(clips)
    write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
