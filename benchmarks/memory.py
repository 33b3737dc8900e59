"""Peak memory of the video pipeline does not grow with the video's length.

    python benchmarks/memory.py [--frames 24 --factor 10]

Runs `annotate_video` (decode, detect, crop, pose, merge, render, encode) on a synthetic crowd
video and on one `factor` times longer, each in a fresh process, and reports both peaks: RSS
(the kernel's high-water mark) and, on a GPU, `torch.cuda.max_memory_allocated`. Prints a rich
table and writes JSON (atomically) to --out.

With glibc's default (dynamic) mmap threshold, RSS climbs by a few hundred MiB over the first
hundred-odd frames and then stays level: freed frame-sized buffers raise the threshold, later
ones come from the heap arenas of the pipeline's threads. `--mmap-threshold 131072` fixes the
threshold and shows whether anything else grows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from mipnet_cli.bench import (  # noqa: E402
    PipelineSettings,
    default_detector,
    machine_info,
    machine_line,
    memory_table,
    parse_size,
    pipeline_memory,
    write_reports,
)
from mipnet_cli.core.hardware import pick_device  # noqa: E402

GROWTH_MAX = 1.10  # the long run's peak may exceed the short one's by this factor at most


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", default="hrnet_w18_small")
    p.add_argument("--frames", type=int, default=24, help="frames of the short video")
    p.add_argument("--factor", type=int, default=10, help="the long video is this much longer")
    p.add_argument("--size", default="640x360", help="video WIDTHxHEIGHT")
    p.add_argument("--people", type=int, default=4)
    p.add_argument("--detector", default="auto", help="auto, none or a torchvision detector")
    p.add_argument("--synth-workers", type=int, default=1)
    p.add_argument("--boxes", choices=("gt", "detector", "auto"), default="gt",
                   help="boxes for the pose stages (default gt: the detector runs, but every "
                        "frame has the video's people, so load does not depend on detections)")
    p.add_argument("--mmap-threshold", type=int, default=None,
                   help="run with glibc's MALLOC_MMAP_THRESHOLD_=BYTES (a fixed threshold: large "
                        "buffers are always mmap'd and returned to the system when freed)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/memory.json"))
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    a = p.parse_args()
    device = pick_device(a.device)
    width, height = parse_size(a.size)
    detector = {"auto": default_detector(device), "none": None}.get(a.detector, a.detector)
    settings = PipelineSettings(arch=a.arch, frames=a.frames, width=width, height=height,
                                people=a.people, detector=detector, boxes=a.boxes, flip=True,
                                half=device.type == "cuda", synth_workers=a.synth_workers)
    console = Console(width=max(Console().width, 120))
    info = machine_info(device)
    env = ({"MALLOC_MMAP_THRESHOLD_": str(a.mmap_threshold)} if a.mmap_threshold is not None
           else {})
    mem = pipeline_memory(settings, device, a.factor, env)
    growth = max(mem["rss_growth"], mem.get("cuda_growth", 1.0))
    mem |= {"growth_max": GROWTH_MAX, "flat": growth <= GROWTH_MAX}
    result = {"machine": info, "command": "python " + " ".join(sys.argv), "memory": mem}
    console.print(machine_line(info), highlight=False)
    console.print(memory_table(mem))
    verdict = "[green]flat[/]" if mem["flat"] else "[red]grows[/]"
    console.print(f"peak memory vs length: {verdict} (limit ×{GROWTH_MAX})")
    write_reports(result, a.out, a.markdown, console)


if __name__ == "__main__":
    main()
