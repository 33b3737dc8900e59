"""The fault suite: bad images, videos, checkpoints, annotation files, output paths and
signals, each run through the CLI as a user would, with the same checks every time: the exit
code, one `error:` line naming the file at fault (no traceback), and the state of every output
afterwards. `docs/faults.md` lists the cases and their outcomes.

Each case builds its files in a fresh folder, runs one command and checks what it left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from mipnet_cli.checkpoints.format import save_checkpoint
from mipnet_cli.cli import run_app
from mipnet_cli.media.writers import read_frame_records
from mipnet_cli.models import build_model
from mipnet_cli.pose.engine import PoseEstimator
from mipnet_cli.synth import VideoConfig, generate_video

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # test photos are SIZE x SIZE


# --- the shared kit: a tiny network, photos with ground truth, a clip ---------------------

@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("kit")
    torch.manual_seed(0)
    ckpt = base / "tiny.safetensors"
    save_checkpoint(ckpt, build_model("hrnet_w8_tiny", num_instances=2))
    clip = base / "clip.mp4"
    generate_video(clip, VideoConfig(frames=6, fps=10, width=96, height=64, min_people=1,
                                     max_people=1, seed=1))
    return {"ckpt": ckpt, "clip": clip, "clip_gt": clip.with_suffix(".json")}


def _photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _gt(path: Path, names: list[str], bbox: list = (8, 8, 40, 50)) -> Path:
    """COCO ground truth: one person per image, with keypoints."""
    kps = []
    for j in range(17):
        kps += [10 + 2 * j, 10 + 2 * j, 2]
    data = {
        "images": [{"id": i + 1, "file_name": n, "width": SIZE, "height": SIZE}
                   for i, n in enumerate(names)],
        "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": list(bbox),
                         "area": 2000.0, "iscrowd": 0, "keypoints": kps, "num_keypoints": 17}
                        for i in range(len(names))],
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": [f"k{j}" for j in range(17)], "skeleton": []}],
    }
    path.write_text(json.dumps(data))
    return path


def _photos(folder: Path, n: int = 2) -> tuple[list[Path], Path]:
    """n numbered photos (1.png ...) and their ground truth."""
    files = [_photo(folder / f"{i + 1}.png", i) for i in range(n)]
    return files, _gt(folder / "gt.json", [f.name for f in files])


def _tampered(src: Path, dst: Path, **meta_changes) -> Path:
    """A copy of a checkpoint whose metadata has some fields changed (config fields too)."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["config"])
    for key, value in meta_changes.items():
        if key in config:
            config[key] = value
        else:
            meta[key] = value
    meta["config"] = json.dumps(config)
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


@dataclass
class Run:
    code: int
    out: str
    err: str


def _run(capsys, *argv: object) -> Run:
    code = run_app([str(a) for a in argv])
    cap = capsys.readouterr()
    return Run(code, cap.out, cap.err)


def assert_fails(run: Run, code: int, *needles: str) -> str:
    """Exit `code`, no traceback, exactly one error line, holding every needle."""
    assert run.code == code, (run.code, run.out, run.err)
    assert "Traceback" not in run.out + run.err
    errors = [ln for ln in run.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, run.err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def assert_ok(run: Run, code: int = 0) -> None:
    assert run.code == code, (run.code, run.out, run.err)
    assert "Traceback" not in run.out + run.err
    assert "Warning" not in run.err, run.err


def hidden(folder: Path) -> list[str]:
    """Temporary (hidden) files left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


PREDICT = ("predict", "--device", "cpu", "--no-flip", "--no-recover")  # top-down alone


def _predict(capsys, weights: Path, *argv: object) -> Run:
    return _run(capsys, *PREDICT, "--weights", weights, *argv)


def _video(capsys, kit, *argv: object) -> Run:
    return _run(capsys, "video", kit["clip"], "--weights", kit["ckpt"], "--gt", kit["clip_gt"],
                "--device", "cpu", "--no-flip", "--no-recover", *argv)


# --- 1. output paths: checked before any work ---------------------------------------------

@dataclass
class OutputCase:
    name: str
    argv: Callable[[dict, Path], list]  # (kit, tmp) -> command line after the command name
    needles: tuple[str, ...]
    untouched: str | None = None  # a file in tmp that must keep its bytes


def _prepared(tmp: Path) -> None:
    (tmp / "file.txt").write_text("keep me")
    (tmp / "folder").mkdir()


OUTPUT_CASES = [
    OutputCase("predict --out FILE", lambda k, t: [*PREDICT, "--weights", k["ckpt"], "--gt",
               t / "p/gt.json", t / "p/1.png", "--out", t / "file.txt"],
               ("--out", "file.txt", "not a folder"), "file.txt"),
    OutputCase("predict --out FILE/sub", lambda k, t: [*PREDICT, "--weights", k["ckpt"], "--gt",
               t / "p/gt.json", t / "p/1.png", "--out", t / "file.txt/sub"],
               ("file.txt/sub", "is a file, not a folder"), "file.txt"),
    OutputCase("predict --json DIR", lambda k, t: [*PREDICT, "--weights", k["ckpt"], "--gt",
               t / "p/gt.json", t / "p/1.png", "--json", t / "folder"],
               ("--json", "folder", "is a folder")),
    OutputCase("predict --coco FILE/sub.json", lambda k, t: [
               *PREDICT, "--weights", k["ckpt"], "--gt", t / "p/gt.json", t / "p/1.png",
               "--coco", t / "file.txt/sub.json"], ("file.txt", "not a folder"), "file.txt"),
    OutputCase("video --out FILE/sub.mp4", lambda k, t: [
               "video", k["clip"], "--weights", k["ckpt"], "--gt", k["clip_gt"], "--out",
               t / "file.txt/a.mp4"], ("file.txt/a.mp4", "not a folder"), "file.txt"),
    OutputCase("video --json DIR", lambda k, t: [
               "video", k["clip"], "--weights", k["ckpt"], "--gt", k["clip_gt"], "--json",
               t / "folder"], ("--json", "is a folder")),
    OutputCase("video --coco FILE/sub", lambda k, t: [
               "video", k["clip"], "--weights", k["ckpt"], "--gt", k["clip_gt"], "--coco",
               t / "file.txt/d.json"], ("file.txt/d.json", "not a folder"), "file.txt"),
    OutputCase("lambda-sweep --out FILE", lambda k, t: [
               "lambda-sweep", t / "p/1.png", "--box", "8,8,40,50", "--weights", k["ckpt"],
               "--out", t / "file.txt"], ("--out", "not a folder"), "file.txt"),
    OutputCase("heatmaps --out FILE/sub", lambda k, t: [
               "heatmaps", t / "p/1.png", "--box", "8,8,40,50", "--weights", k["ckpt"],
               "--out", t / "file.txt/sub"], ("file.txt/sub", "not a folder"), "file.txt"),
    OutputCase("eval --json DIR", lambda k, t: [
               "eval", t / "p/gt.json", t / "p", "--weights", k["ckpt"], "--json",
               t / "folder"], ("--json", "is a folder")),
    OutputCase("eval --plot FILE/sub.png", lambda k, t: [
               "eval", t / "p/gt.json", t / "p", "--weights", k["ckpt"], "--sweep", "--plot",
               t / "file.txt/s.png"], ("file.txt/s.png", "not a folder"), "file.txt"),
    OutputCase("weights import SRC DIR", lambda k, t: [
               "weights", "import", t / "x.pth", t / "folder"], ("DST", "is a folder")),
    OutputCase("weights convert SRC FILE/sub", lambda k, t: [
               "weights", "convert", t / "x.pth", t / "file.txt/o.safetensors"],
               ("file.txt/o.safetensors", "not a folder"), "file.txt"),
    # 2. an output that is an input, or another output
    OutputCase("predict a.png --json a.png", lambda k, t: [
               *PREDICT, "--weights", k["ckpt"], "--gt", t / "p/gt.json", t / "p/1.png",
               "--json", t / "p/1.png"], ("--json", "1.png", "is an input"), "p/1.png"),
    OutputCase("predict --json r.json --coco r.json", lambda k, t: [
               *PREDICT, "--weights", k["ckpt"], "--gt", t / "p/gt.json", t / "p/1.png",
               "--json", t / "r.json", "--coco", t / "r.json"], ("--json", "--coco", "same file")),
    OutputCase("predict --json GT", lambda k, t: [
               *PREDICT, "--weights", k["ckpt"], "--gt", t / "p/gt.json", t / "p/1.png",
               "--json", t / "p/gt.json"], ("gt.json", "is an input"), "p/gt.json"),
    OutputCase("video --out s.mp4 --json s.mp4", lambda k, t: [
               "video", k["clip"], "--weights", k["ckpt"], "--gt", k["clip_gt"], "--out",
               t / "s.mp4", "--json", t / "s.mp4"], ("--out", "--json", "same file")),
    OutputCase("video --json INPUT", lambda k, t: [
               "video", k["clip"], "--weights", k["ckpt"], "--gt", k["clip_gt"], "--json",
               k["clip"]], ("clip.mp4", "is an input")),
    OutputCase("weights import x.pth x.pth", lambda k, t: [
               "weights", "import", t / "x.pth", t / "x.pth"], ("x.pth", "is an input"), "x.pth"),
    OutputCase("eval --json GT", lambda k, t: [
               "eval", t / "p/gt.json", t / "p", "--weights", k["ckpt"], "--json",
               t / "p/gt.json"], ("gt.json", "is an input"), "p/gt.json"),
]


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=[c.name for c in OUTPUT_CASES])
def test_output_paths_are_checked_before_any_work(case: OutputCase, kit, tmp_path, capsys,
                                                  monkeypatch) -> None:
    _prepared(tmp_path)
    _photos(tmp_path / "p")
    torch.save(build_model("hrnet_w8_tiny", num_instances=2).state_dict(), tmp_path / "x.pth")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    ran = []
    monkeypatch.setattr(PoseEstimator, "predict", lambda *a: ran.append(1) or [])
    assert_fails(_run(capsys, *case.argv(kit, tmp_path)), 2, *case.needles)
    assert not ran  # refused before the network ran
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing replaced
    if case.untouched:
        assert (tmp_path / case.untouched).read_bytes() == before[tmp_path / case.untouched]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: no read-only folder")
def test_read_only_folder_is_refused_before_work(kit, tmp_path, capsys) -> None:
    files, gt = _photos(tmp_path / "p")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert_fails(_predict(capsys, kit["ckpt"], "--gt", gt, files[0], "--json",
                              locked / "r.json"), 2, "locked", "permission denied")
    finally:
        locked.chmod(0o700)


def test_a_failed_write_is_one_line_naming_the_file(kit, tmp_path, capsys, monkeypatch) -> None:
    """Any OSError at write time (disk full, permissions as root cannot show) is one line."""
    files, gt = _photos(tmp_path / "p")
    (tmp_path / "r.json").write_text("previous")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "r.json"))

    monkeypatch.setattr("mipnet_cli.core.files.tempfile.mkstemp", refuse)
    assert_fails(_predict(capsys, kit["ckpt"], "--gt", gt, files[0], "--json", tmp_path / "r.json"),
                 2, "r.json", "Permission denied")
    assert (tmp_path / "r.json").read_text() == "previous"


# --- 3. user text is never Rich markup ----------------------------------------------------

def test_markup_in_file_names_and_messages(kit, tmp_path, capsys) -> None:
    photos = tmp_path / "p"
    good = _photo(photos / "x[" / "y].png")  # the path holds "x[/y]", a closing tag
    bad = photos / "bad[red]name.png"
    bad.write_text("not an image")
    gt = _gt(photos / "gt.json", [good.name, bad.name])
    run = _predict(capsys, kit["ckpt"], "--gt", gt, good, bad, "--json", tmp_path / "r.json")
    assert_ok(run, code=1)  # one file skipped
    assert f"skipped {bad}:" in run.err
    assert len(json.loads((tmp_path / "r.json").read_text())) > 0
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": "x", "score": 1}]))
    line = assert_fails(_predict(capsys, kit["ckpt"], "--boxes", boxes, "--gt", gt, good), 2,
                        "boxes.json", "bbox [x, y, w, h]")
    assert "[x, y, w, h]" in line


# --- 4. signals ---------------------------------------------------------------------------

def _interrupt_on_call(monkeypatch, call: int, signum: int) -> None:
    predict = PoseEstimator.predict
    calls = []

    def interrupted(self, images, boxes):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signum)
        return predict(self, images, boxes)

    monkeypatch.setattr(PoseEstimator, "predict", interrupted)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_predict_keeps_the_images_done(signum, kit, tmp_path, capsys,
                                                     monkeypatch) -> None:
    files, gt = _photos(tmp_path / "p", 4)
    _interrupt_on_call(monkeypatch, 2, signum)
    out = tmp_path / "r.json"
    run = _predict(capsys, kit["ckpt"], "--gt", gt, *files, "--json", out, "--coco",
                   tmp_path / "d.json", "--batch-size", 1)
    assert run.code == 128 + signum, run.err
    assert "Traceback" not in run.err
    name = signal.Signals(signum).name
    assert f"interrupted ({name}) after 2 of 4 images; the outputs hold the 2 done" in run.err
    assert {r["image_id"] for r in json.loads(out.read_text())} <= {1, 2}
    assert len(json.loads((tmp_path / "d.json").read_text())["images"]) == 2
    assert not hidden(tmp_path)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_video_closes_every_output(signum, kit, tmp_path, capsys,
                                                 monkeypatch) -> None:
    _interrupt_on_call(monkeypatch, 2, signum)
    out, jsonl, coco = tmp_path / "o.mp4", tmp_path / "o.jsonl", tmp_path / "o.json"
    run = _video(capsys, kit, "--out", out, "--json", jsonl, "--coco", coco,
                 "--batch-frames", 1)
    assert run.code == 128 + signum, run.err
    assert f"interrupted ({signal.Signals(signum).name}) after 2 frames" in run.err
    records, end = read_frame_records(jsonl)
    assert len(records) == 2 and end["interrupted"] and not end["complete"]
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2
    assert len(json.loads(coco.read_text())["images"]) == 2
    assert not hidden(tmp_path)


def _spawn_video(kit, folder: Path, frames_clip: Path) -> tuple[subprocess.Popen, Path]:
    jsonl = folder / "o.jsonl"
    cmd = [sys.executable, "-m", "mipnet_cli", "video", str(frames_clip), "--weights",
           str(kit["ckpt"]), "--gt", str(frames_clip.with_suffix(".json")), "--device", "cpu",
           "--no-flip", "--batch-frames", "1", "--out", str(folder / "o.mp4"), "--json",
           str(jsonl), "--coco", str(folder / "o.json")]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    return proc, jsonl


def _wait_for_lines(proc: subprocess.Popen, path: Path, n: int, timeout: float = 120) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run wrote no frames in time")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    generate_video(path, VideoConfig(frames=300, fps=25, width=96, height=64, min_people=1,
                                     max_people=1, seed=2))
    return path


def test_sigterm_to_the_process_finishes_what_is_valid(kit, long_clip, tmp_path) -> None:
    """The real entry point, a real SIGTERM: exit 143, one line, every output valid."""
    proc, jsonl = _spawn_video(kit, tmp_path, long_clip)
    _wait_for_lines(proc, jsonl, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted (SIGTERM) after" in err
    records, end = read_frame_records(jsonl)
    assert end is not None and end["interrupted"] and end["frames"] == len(records) >= 3
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == end["frames"]
    assert len(json.loads((tmp_path / "o.json").read_text())["images"]) == len(records)
    assert not hidden(tmp_path)


def test_after_sigkill_leftovers_are_not_results(kit, long_clip, tmp_path) -> None:
    """SIGKILL cannot be handled: the JSON Lines have no end record and temporary files stay;
    the next run removes the dead run's temporary files and ends its JSON Lines properly."""
    proc, jsonl = _spawn_video(kit, tmp_path, long_clip)
    _wait_for_lines(proc, jsonl, 2)
    proc.kill()
    proc.communicate()
    records, end = read_frame_records(jsonl)
    assert end is None and records  # recognisably incomplete
    assert hidden(tmp_path)  # the killed run's temporary video and COCO spool
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.json").exists()
    code = run_app(["video", str(long_clip), "--weights", str(kit["ckpt"]), "--gt",
                    str(long_clip.with_suffix(".json")), "--device", "cpu", "--no-flip",
                    "--max-frames", "3", "--out", str(tmp_path / "o.mp4"), "--json", str(jsonl),
                    "--coco", str(tmp_path / "o.json")])
    assert code == 0
    records, end = read_frame_records(jsonl)
    assert end["complete"] and len(records) == 3
    assert not hidden(tmp_path)


# --- 5. numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("command,box", [("heatmaps", "nan,10,50,50"),
                                         ("lambda-sweep", "0,0,inf,50")])
def test_non_finite_box_option(command, box, kit, tmp_path, capsys) -> None:
    photo = _photo(tmp_path / "a.png")
    assert_fails(_run(capsys, command, photo, "--box", box, "--weights", kit["ckpt"], "--out",
                      tmp_path / "o"), 2, f"--box '{box}'", "finite")
    assert not (tmp_path / "o").exists()


def test_checkpoint_with_nan_weights_is_refused(kit, tmp_path, capsys) -> None:
    state = load_file(str(kit["ckpt"]))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    from safetensors import safe_open

    with safe_open(str(kit["ckpt"]), framework="pt") as f:
        meta = f.metadata()
    bad = tmp_path / "nan.safetensors"
    save_file(state, str(bad), metadata=meta)
    files, gt = _photos(tmp_path / "p")
    assert_fails(_predict(capsys, bad, "--gt", gt, files[0], "--json", tmp_path / "r.json"),
                 2, "nan.safetensors", "NaN or infinity")
    assert not (tmp_path / "r.json").exists()


def test_non_finite_network_output_never_reaches_json(kit, tmp_path, capsys,
                                                      monkeypatch) -> None:
    """Belt and braces: a NaN that got through anyway is an error naming the file, and the
    previous file stays."""
    files, gt = _photos(tmp_path / "p")
    out = tmp_path / "r.json"
    out.write_text("[]")
    predict = PoseEstimator.predict

    def nan_scores(self, images, boxes):
        poses = predict(self, images, boxes)
        for image_poses in poses:
            for p in image_poses:
                p.score = float("nan")
        return poses

    monkeypatch.setattr(PoseEstimator, "predict", nan_scores)
    assert_fails(_predict(capsys, kit["ckpt"], "--gt", gt, files[0], "--json", out), 2, "r.json",
                 "non-finite")
    assert out.read_text() == "[]"


@pytest.mark.parametrize("where", ["boxes", "gt"])
def test_nan_boxes_in_eval_are_refused(where, kit, tmp_path, capsys) -> None:
    files, gt = _photos(tmp_path / "p")
    argv: list = ["eval", gt, tmp_path / "p", "--weights", kit["ckpt"], "--no-flip"]
    if where == "boxes":
        bad = tmp_path / "dets.json"
        bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 0.9,
                                    "bbox": [float("nan"), 1, 20, 20]}]))
        argv += ["--boxes", bad]
    else:
        bad = _gt(tmp_path / "p" / "gt_nan.json", [f.name for f in files],
                  bbox=[float("nan"), 8, 40, 50])
        argv[1] = bad
    assert_fails(_run(capsys, *argv), 2, bad.name, "finite")


# --- 6. checkpoint metadata ---------------------------------------------------------------

META_CASES = {
    "unknown arch": ({"arch": "resnet9000"}, "unknown arch"),
    "input size 100k": ({"image_size": [100_000, 100_000]}, "multiple of 32 from 32 to 2048"),
    "input size 0x0": ({"image_size": [0, 0]}, "multiple of 32"),
    "input size text": ({"image_size": "big"}, "bad mipnet checkpoint metadata"),
    "format_version 99": ({"format_version": "99"}, "format_version '99'"),
    "keypoints unknown": ({"keypoints": "horse"}, "unknown keypoint set"),
    "keypoints crowdpose on 17 joints": ({"keypoints": "crowdpose"}, "has 14 joints"),
    "instances 1000": ({"num_instances": 1000}, "1000 instances"),
}


@pytest.mark.parametrize("command", ["weights info", "predict"])
@pytest.mark.parametrize("case", list(META_CASES), ids=list(META_CASES))
def test_checkpoint_metadata_is_validated(case, command, kit, tmp_path, capsys) -> None:
    changes, needle = META_CASES[case]
    bad = _tampered(kit["ckpt"], tmp_path / "bad.safetensors", **changes)
    if command == "weights info":
        run = _run(capsys, "weights", "info", bad)
    else:
        files, gt = _photos(tmp_path / "p")
        run = _predict(capsys, bad, "--gt", gt, files[0], "--json", tmp_path / "r.json")
        assert not (tmp_path / "r.json").exists()
    assert_fails(run, 2, "bad.safetensors", needle)


@pytest.mark.parametrize("options,needle", [
    (["--input-size", "250x190"], "multiple of 32"),
    (["--input-size", "0x0"], "multiple of 32"),
    (["--input-size", "big"], "expected HEIGHTxWIDTH"),
    (["--keypoints", "crowdpose"], "has 14 joints"),
    (["--keypoints", "horse"], "unknown keypoint set"),
], ids=["250x190", "0x0", "text", "crowdpose on 17 joints", "unknown set"])
def test_weights_import_validates_before_writing(options, needle, tmp_path, capsys) -> None:
    src = tmp_path / "x.pth"
    torch.save(build_model("hrnet_w8_tiny", num_instances=2).state_dict(), src)
    assert_fails(_run(capsys, "weights", "import", src, tmp_path / "o.safetensors", *options),
                 2, needle)
    assert not (tmp_path / "o.safetensors").exists()


def test_truncated_safetensors_and_code_running_pickle(kit, tmp_path, capsys) -> None:
    cut = tmp_path / "cut.safetensors"
    data = kit["ckpt"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert_fails(_run(capsys, "weights", "info", cut), 2, "cut.safetensors")

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, evil)
    line = assert_fails(_run(capsys, "weights", "import", evil, tmp_path / "o.safetensors"), 2,
                        "evil.pth", "refused")
    assert "weights_only" not in line and "trust" not in line  # no advice to load it anyway
    assert not (tmp_path / "pwned").exists()
    files, gt = _photos(tmp_path / "p")
    assert_fails(_predict(capsys, evil, "--gt", gt, files[0]), 2, "evil.pth", "refused")
    assert not (tmp_path / "pwned").exists()


# --- 7. box files whose ids match nothing -------------------------------------------------

def test_box_file_matching_no_image(kit, tmp_path, capsys) -> None:
    files, _ = _photos(tmp_path / "p")
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps([{"image_id": 999, "category_id": 1, "score": 0.9,
                                  "bbox": [1, 1, 30, 30]}]))
    assert_fails(_predict(capsys, kit["ckpt"], "--boxes", boxes, *files, "--json",
                          tmp_path / "r.json"), 2, "dets.json", "none of its image ids (999)")
    assert not (tmp_path / "r.json").exists()
    boxes.write_text(json.dumps([{"image_id": 2, "category_id": 1, "score": 0.9,
                                  "bbox": [1, 1, 30, 30]}]))
    run = _predict(capsys, kit["ckpt"], "--boxes", boxes, *files, "--json", tmp_path / "r.json")
    assert_ok(run)
    assert "for 1 of 2 images" in run.err


def test_video_box_file_matching_no_frame(kit, tmp_path, capsys) -> None:
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps([{"image_id": 5000, "category_id": 1, "score": 0.9,
                                  "bbox": [1, 1, 30, 30]}]))
    run = _run(capsys, "video", kit["clip"], "--weights", kit["ckpt"], "--boxes", boxes,
               "--device", "cpu", "--no-flip", "--json", tmp_path / "o.jsonl")
    assert_fails(run, 2, "dets.json", "none of its image ids (5000)", "frames")


# --- 8. eval options and files ------------------------------------------------------------

def test_eval_gt_without_categories_still_scores(kit, tmp_path, capsys) -> None:
    files, gt = _photos(tmp_path / "p")
    data = json.loads(gt.read_text())
    del data["categories"]
    gt.write_text(json.dumps(data))
    run = _run(capsys, "eval", gt, tmp_path / "p", "--weights", kit["ckpt"], "--no-flip",
               "--json", tmp_path / "m.json")
    assert_ok(run)
    assert "AP" in json.loads((tmp_path / "m.json").read_text())["metrics"]["merged"]


@pytest.mark.parametrize("options,needle", [
    (["--instances", "9"], "instances must be between 1 and 2"),
    (["--batch-size", "0"], "--batch-size"),
    (["--instance-decay", "-3"], "--instance-decay"),
    (["--instances", "0"], "--instances"),
], ids=["instances 9", "batch-size 0", "instance-decay -3", "instances 0"])
def test_eval_option_bounds(options, needle, kit, tmp_path, capsys) -> None:
    files, gt = _photos(tmp_path / "p")
    assert_fails(_run(capsys, "eval", gt, tmp_path / "p", "--weights", kit["ckpt"], *options),
                 2, needle)


# --- 9. noise, and the cases that already behaved ---------------------------------------

def test_large_image_gives_no_library_warning(kit, tmp_path, capsys) -> None:
    big = tmp_path / "1.png"
    Image.new("RGB", (12000, 9000)).save(big, compress_level=1)  # over PIL's bomb warning
    gt = _gt(tmp_path / "gt.json", [big.name])
    run = _predict(capsys, kit["ckpt"], "--gt", gt, big, "--json", tmp_path / "r.json")
    assert_ok(run)
    assert "DecompressionBomb" not in run.err


def _bad_images(folder: Path) -> dict[str, str]:
    """Unreadable image files and the reason each must be reported with."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _photo(folder / "good.jpg")
    data = good.read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "text.jpg").write_text("hello, I am not a picture")
    return {"empty.jpg": "empty", "truncated.jpg": "truncated", "text.jpg": "not a readable image"}


def test_mixed_good_and_bad_folder(kit, tmp_path, capsys) -> None:
    reasons = _bad_images(tmp_path / "p")
    Image.new("RGB", (1, 1)).save(tmp_path / "p" / "tiny.png")
    rgb16 = (np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE) * 16)
    Image.fromarray(rgb16).save(tmp_path / "p" / "deep.png")
    Image.new("CMYK", (SIZE, SIZE), (10, 20, 30, 0)).save(tmp_path / "p" / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (SIZE, 32)).save(tmp_path / "p" / "rotated.jpg", exif=exif)
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    gt = _gt(tmp_path / "gt.json", names, bbox=[0, 0, 1, 1])
    run = _predict(capsys, kit["ckpt"], "--gt", gt, tmp_path / "p", "--json", tmp_path / "r.json")
    assert run.code == 1 and "Traceback" not in run.err
    for name, reason in reasons.items():
        line = next(ln for ln in run.err.splitlines() if name in ln)
        assert line.startswith("skipped") and reason in line, line
    done = {r["image_id"] for r in json.loads((tmp_path / "r.json").read_text())}
    ids = {n: i + 1 for i, n in enumerate(names)}
    assert {ids[n] for n in ("good.jpg", "deep.png", "cmyk.jpg", "rotated.jpg")} <= done
    assert not hidden(tmp_path)


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 16000
        for i in range(5):
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return path


def _variable_rate(path: Path) -> Path:
    """An MKV whose frame intervals alternate 40 ms and 120 ms."""
    with av.open(str(path), "w") as c:
        stream = c.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        t = 0
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8),
                                               format="rgb24")
            frame.pts, frame.time_base = t, stream.time_base
            t += 40 if i % 2 == 0 else 120
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return path


def test_bad_and_odd_videos(kit, tmp_path, capsys) -> None:
    data = kit["clip"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps([{"image_id": i, "category_id": 1, "score": 0.9,
                                  "bbox": [1, 1, 30, 30]} for i in range(1, 20)]))
    common = ["--weights", kit["ckpt"], "--device", "cpu", "--no-flip", "--boxes", boxes]
    run = _run(capsys, "video", cut, *common, "--json", tmp_path / "cut.jsonl")
    assert run.code in (1, 2) and "Traceback" not in run.err and "cut.mp4" in run.err
    audio = _audio_only(tmp_path / "audio.m4a")
    assert_fails(_run(capsys, "video", audio, *common, "--json", tmp_path / "a.jsonl"), 2,
                 "audio.m4a", "no video")
    assert not (tmp_path / "a.jsonl").exists()
    vfr = _variable_rate(tmp_path / "vfr.mkv")
    run = _run(capsys, "video", vfr, *common, "--json", tmp_path / "v.jsonl")
    assert_ok(run)
    records, end = read_frame_records(tmp_path / "v.jsonl")
    times = [r["timestamp"] for r in records]
    assert end["complete"] and len(records) == 8
    assert np.allclose(np.diff(times), [0.04, 0.12] * 3 + [0.04], atol=1e-3)
    (tmp_path / "zero.mp4").write_bytes(b"")
    assert_fails(_run(capsys, "video", tmp_path / "zero.mp4", *common), 2, "zero.mp4")


# --- single-stage networks and --rescore psm: misuse is one line, before any work --------

@pytest.fixture(scope="module")
def single_stage(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pfs") / "pfs.safetensors"
    save_checkpoint(path, build_model("pfs_yolox_nano", image_size=(64, 64)))
    return path


SINGLE_STAGE_CASES = {
    "single stage --boxes": (lambda k, s, t: ["--weights", s, "--boxes", t / "p/gt.json"],
                             ("single-stage network", "--boxes")),
    "single stage --detector": (lambda k, s, t: ["--weights", s, "--detector", "yolox_nano"],
                                ("finds the people itself", "--detector")),
    "single stage --rescore psm": (lambda k, s, t: ["--weights", s, "--rescore", "psm",
                                                    "--scorer", s], ("scores its own poses",)),
    "--scorer without --rescore psm": (lambda k, s, t: ["--weights", k["ckpt"], "--scorer", s],
                                       ("--scorer", "--rescore psm")),
    "--scorer not single stage": (lambda k, s, t: ["--weights", k["ckpt"], "--rescore", "psm",
                                                   "--scorer", k["ckpt"]],
                                  ("needs a single-stage checkpoint",)),
    "--rescore unknown": (lambda k, s, t: ["--weights", k["ckpt"], "--rescore", "maybe"],
                          ("rescore 'maybe'", "keypoints or psm")),
    "--input-size on a top-down network": (lambda k, s, t: ["--weights", k["ckpt"],
                                                            "--input-size", "256"],
                                           ("--input-size", "whole-image networks")),
    "--input-size not a multiple of 32": (lambda k, s, t: ["--weights", s, "--input-size", "100"],
                                          ("--input-size", "multiple of 32")),
    "--max-people on a top-down network": (lambda k, s, t: ["--weights", k["ckpt"],
                                                            "--max-people", "5"],
                                           ("--max-people", "whole-image networks")),
    "--recover with a whole-image network": (lambda k, s, t: ["--weights", s, "--recover"],
                                             ("crowd recovery", "top-down one as --weights")),
    "--recover-weights top-down": (lambda k, s, t: ["--weights", k["ckpt"], "--recover",
                                                    "--recover-weights", k["ckpt"]],
                                   ("crowd recovery", "whole-image checkpoint")),
    "--recover-weights with --no-recover": (lambda k, s, t: ["--weights", k["ckpt"],
                                                             "--no-recover",
                                                             "--recover-weights", s],
                                            ("--recover-weights", "--no-recover")),
}


@pytest.mark.parametrize("case", list(SINGLE_STAGE_CASES))
def test_single_stage_and_psm_misuse(case, kit, single_stage, tmp_path, capsys) -> None:
    argv, needles = SINGLE_STAGE_CASES[case]
    files, gt = _photos(tmp_path / "p")
    run = _run(capsys, *PREDICT, files[0], "--json", tmp_path / "r.json",
               *argv(kit, single_stage, tmp_path))
    assert_fails(run, 2, *needles)
    assert not (tmp_path / "r.json").exists()


def test_single_stage_eval_refuses_box_options(single_stage, tmp_path, capsys) -> None:
    files, gt = _photos(tmp_path / "p")
    for extra in (["--sweep"], ["--boxes", gt]):
        run = _run(capsys, "eval", gt, tmp_path / "p", "--weights", single_stage, *extra)
        assert_fails(run, 2, "single-stage network")


# --- detector input sizes (--det-size): misuse is one line, before any work ---------------

DET_SIZE_CASES = {
    "not a multiple of 32": (lambda k, s, t: [*PREDICT, "--weights", k["ckpt"], "--det-size",
                                              "400", t / "p/1.png"], ("--det-size", "400",
                                                                      "multiple of 32")),
    "not a number": (lambda k, s, t: [*PREDICT, "--weights", k["ckpt"], "--det-size", "416,x",
                                      t / "p/1.png"],
                     ("--det-size 416,x", "such as 416 or 416,832")),
    "boxes from --gt": (lambda k, s, t: [*PREDICT, "--weights", k["ckpt"], "--gt",
                                         t / "p/gt.json", "--det-size", "416", t / "p/1.png"],
                        ("--det-size", "--gt", "leave it out")),
    "single stage": (lambda k, s, t: [*PREDICT, "--weights", s, "--det-size", "416",
                                      t / "p/1.png"], ("finds the people itself", "--det-size")),
    "video, too large": (lambda k, s, t: ["video", k["clip"], "--weights", k["ckpt"],
                                          "--det-size", "416,8192"], ("8192", "4096")),
    "eval without a detector": (lambda k, s, t: ["eval", t / "p/gt.json", t / "p", "--weights",
                                                 k["ckpt"], "--det-size", "416"],
                                ("--det-size", "--detect")),
}


@pytest.mark.parametrize("case", list(DET_SIZE_CASES))
def test_det_size_misuse(case, kit, single_stage, tmp_path, capsys) -> None:
    argv, needles = DET_SIZE_CASES[case]
    _photos(tmp_path / "p")
    run = _run(capsys, *argv(kit, single_stage, tmp_path), "--json", tmp_path / "r.json")
    assert_fails(run, 2, *needles)
    assert not (tmp_path / "r.json").exists()
