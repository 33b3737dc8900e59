"""Peak memory of the video pipeline does not grow with the video's length.

    python benchmarks/memory.py [--frames 24 --factor 10]

Runs `annotate_video` (decode, detect, crop, pose, merge, render, encode) on a synthetic crowd
video and on one `factor` times longer, each in a fresh process, and reports both peaks: RSS
(the kernel's high-water mark) and, on a GPU, `torch.cuda.max_memory_allocated`. Prints a rich
table and writes JSON (atomically) to --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from mipnet_cli.bench import (
    PipelineSettings,
    default_detector,
    machine_info,
    machine_line,
    markdown_report,
    memory_table,
    parse_size,
    pipeline_memory,
)
from mipnet_cli.engine import pick_device
from mipnet_cli.io import write_json

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
    p.add_argument("--out", type=Path, default=Path("benchmarks/memory.json"))
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    a = p.parse_args()
    device = pick_device(a.device)
    width, height = parse_size(a.size)
    detector = {"auto": default_detector(device), "none": None}.get(a.detector, a.detector)
    settings = PipelineSettings(arch=a.arch, frames=a.frames, width=width, height=height,
                                people=a.people, detector=detector, flip=True,
                                half=device.type == "cuda", synth_workers=a.synth_workers)
    console = Console(width=max(Console().width, 120))
    info = machine_info(device)
    mem = pipeline_memory(settings, device, a.factor)
    growth = max(mem["rss_growth"], mem.get("cuda_growth", 1.0))
    mem |= {"growth_max": GROWTH_MAX, "flat": growth <= GROWTH_MAX}
    result = {"machine": info, "command": "python " + " ".join(sys.argv), "memory": mem}
    console.print(machine_line(info), highlight=False)
    console.print(memory_table(mem))
    verdict = "[green]flat[/]" if mem["flat"] else "[red]grows[/]"
    console.print(f"peak memory vs length: {verdict} (limit ×{GROWTH_MAX})")
    write_json(a.out, result, indent=1)
    console.print(f"wrote {a.out}")
    if a.markdown is not None:
        a.markdown.write_text(markdown_report(result), encoding="utf-8")
        console.print(f"wrote {a.markdown}")


if __name__ == "__main__":
    main()
