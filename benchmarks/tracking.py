"""How well `mipnet video --track` keeps one id per person, read from its JSON Lines.

There is no identity ground truth for the real clips here, so this counts what fragmentation
and false matches look like: track ids, ids seen in one frame only, tracks of 20 frames or more,
and jumps (a track whose position moves by more than half its height between two consecutive
poses: at 10 fps a walker moves about a tenth). The same poses are then re-tracked with other
tracker settings (`--similarity`, `--max-age`), so settings can be compared on identical poses.

Usage (from the repository root):
    mipnet video ../shared/realdata/video/vtest.avi --max-frames 200 --track --json vt.jsonl
    python benchmarks/tracking.py vt.jsonl [--json benchmarks/tracking.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mipnet_cli.core.files import write_json  # noqa: E402
from mipnet_cli.core.keypoints import COCO17  # noqa: E402
from mipnet_cli.core.results import Pose  # noqa: E402
from mipnet_cli.media.writers import read_frame_records  # noqa: E402
from mipnet_cli.pose.tracking import PoseTracker, pose_box  # noqa: E402

SETTINGS = ((0.3, 5), (0.3, 10), (0.2, 5), (0.2, 10), (0.15, 10))  # (min_similarity, max_age)


def statistics(frames: list[list[Pose]], kpt_thresh: float = 0.3) -> dict[str, int]:
    """Track counts and jumps of poses that carry their `track_id`."""
    life: Counter = Counter()
    last: dict[int, tuple[np.ndarray, float]] = {}
    jumps = 0
    for poses in frames:
        for pose in poses:
            life[pose.track_id] += 1
            box = pose_box(pose, kpt_thresh)
            if box is None:
                continue
            centre, height = (box[:2] + box[2:]) / 2, max(float(box[3] - box[1]), 1.0)
            if pose.track_id in last:
                before, h = last[pose.track_id]
                jumps += bool(np.linalg.norm(centre - before) > 0.5 * max(height, h))
            last[pose.track_id] = (centre, height)
    lengths = list(life.values())
    return {"poses": sum(lengths), "track_ids": len(life),
            "seen_once": sum(n == 1 for n in lengths),
            "tracks_20_frames_or_more": sum(n >= 20 for n in lengths), "jumps": jumps}


def read_poses(path: Path) -> tuple[list[list[Pose]], list[float]]:
    records, _ = read_frame_records(path)
    frames = [[Pose(keypoints=np.asarray(p["keypoints"], np.float64).reshape(-1, 3),
                    score=p["score"], box_id=p["box_id"], instance=p["instance"],
                    box_xywh=p["bbox"], track_id=p.get("track_id")) for p in r["poses"]]
              for r in records]
    return frames, [r["timestamp"] for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path, help="JSON Lines of `mipnet video --track --json`")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "tracking.json")
    args = parser.parse_args()
    frames, times = read_poses(args.jsonl)
    result = {"date": time.strftime("%Y-%m-%d"), "source": args.jsonl.name,
              "frames": len(frames), "as_written": statistics(frames), "retracked": {}}
    print(f"as written: {result['as_written']}")
    for similarity, max_age in SETTINGS:
        tracker = PoseTracker(COCO17, min_similarity=similarity, max_age=max_age)
        for poses, t in zip(frames, times, strict=True):
            tracker.update(poses, t)
        stats = statistics(frames)
        result["retracked"][f"min_similarity {similarity}, max_age {max_age}"] = stats
        print(f"min_similarity {similarity}, max_age {max_age}: {stats}")
    write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
