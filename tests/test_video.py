"""`mipnet video`: frames, timestamps and audio kept; JSONL/COCO outputs; ranges; interruptions;
damaged input; the tracker and the One-Euro filter."""

from __future__ import annotations

import json
import signal
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mipnet_cli.checkpoints.format import save_checkpoint
from mipnet_cli.cli import run_app
from mipnet_cli.core.keypoints import COCO17
from mipnet_cli.core.results import Pose
from mipnet_cli.media.writers import read_frame_records
from mipnet_cli.models import build_model
from mipnet_cli.pose.engine import PoseEstimator
from mipnet_cli.pose.tracking import OneEuroFilter, PoseTracker
from mipnet_cli.synth import VideoConfig, generate_video

FPS = 10
FRAMES = 12


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, build_model("hrnet_w8_tiny", num_instances=2))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 12-frame 10 fps H.264 clip with an AAC track, and its ground truth (clip.json)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    generate_video(path, VideoConfig(frames=FRAMES, fps=FPS, width=128, height=96,
                                     min_people=1, max_people=2, seed=3))
    return path


def _frame_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


def _decodable_times(path: Path) -> list[Fraction]:
    """Times of the frames FFmpeg decodes before a damaged part stops it."""
    times = []
    with av.open(str(path)) as c:
        try:
            for f in c.decode(video=0):
                times.append(f.pts * f.time_base)
        except av.error.InvalidDataError:
            pass
    return times


def _audio_packets(path: Path) -> list[tuple[Fraction, Fraction, int]]:
    with av.open(str(path)) as c:
        return [(p.pts * p.time_base, p.duration * p.time_base, p.size)
                for p in c.demux(audio=0) if p.size]


def _video_info(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return {"codec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt,
                "rate": v.average_rate, "size": (v.width, v.height),
                "audio": [a.codec_context.name for a in c.streams.audio]}


def _lines(path: Path) -> list[dict]:
    """The frame records; the file must end with the end record, which counts them."""
    records, end = read_frame_records(path)
    assert end is not None and end["processed"] == len(records), end
    assert "end" in json.loads(path.read_text().splitlines()[-1])
    return records


def _run(capsys, *args) -> tuple[int, str]:
    code = run_app(["video", *map(str, args), "--device", "cpu", "--no-flip", "--no-recover"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _box_file(path: Path, frames: int, bbox: list[float]) -> Path:
    path.write_text(json.dumps([{"image_id": i + 1, "category_id": 1, "bbox": bbox, "score": 0.9}
                                for i in range(frames)]))
    return path


def test_generated_clip_frames_timestamps_audio_and_outputs(clip, tiny_ckpt, tmp_path,
                                                             capsys) -> None:
    out, jsonl, coco = tmp_path / "out.mp4", tmp_path / "poses.jsonl", tmp_path / "d.json"
    code, text = _run(capsys, clip, "--out", out, "--json", jsonl, "--coco", coco, "--gt",
                      clip.with_suffix(".json"), "--weights", tiny_ckpt, "--batch-frames", 5)
    assert code == 0, text
    assert _frame_times(out) == _frame_times(clip) == [Fraction(i, FPS) for i in range(FRAMES)]
    info = _video_info(out)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["rate"] == _video_info(clip)["rate"] == FPS
    assert info["audio"] == _video_info(clip)["audio"] == ["aac"]
    assert _audio_packets(out) == _audio_packets(clip)  # same packets, times and sizes
    records = _lines(jsonl)
    assert [r["frame_index"] for r in records] == list(range(FRAMES))
    assert [r["timestamp"] for r in records] == pytest.approx([i / FPS for i in range(FRAMES)])
    gt = json.loads(clip.with_suffix(".json").read_text())
    per_image = {img["id"]: 0 for img in gt["images"]}
    for ann in gt["annotations"]:
        per_image[ann["image_id"]] += 1
    assert [r["boxes"] for r in records] == [per_image[i + 1] for i in range(FRAMES)]
    pose = records[0]["poses"][0]
    assert len(pose["keypoints"]) == 3 * 17 and {"score", "bbox", "box_id", "instance"} <= set(pose)
    dataset = json.loads(coco.read_text())
    assert [img["frame_index"] for img in dataset["images"]] == list(range(FRAMES))
    assert len(dataset["annotations"]) == sum(len(r["poses"]) for r in records)
    ids = [a["id"] for a in dataset["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files


def test_stride_start_end(clip, tiny_ckpt, tmp_path, capsys) -> None:
    out, jsonl = tmp_path / "out.mp4", tmp_path / "p.jsonl"
    code, text = _run(capsys, clip, "--out", out, "--json", jsonl, "--gt",
                      clip.with_suffix(".json"), "--weights", tiny_ckpt, "--start", 0.3, "--end",
                      0.85, "--stride", 2)
    assert code == 0, text
    # Frames 3..8 (0.3 s to 0.8 s), shifted to start at 0; the network ran on 3, 5 and 7.
    assert _frame_times(out) == [Fraction(i, FPS) for i in range(6)]
    records = _lines(jsonl)
    assert [r["frame_index"] for r in records] == [3, 5, 7]
    assert [r["timestamp"] for r in records] == pytest.approx([0.3, 0.5, 0.7])
    audio = _audio_packets(out)
    source = _audio_packets(clip)
    kept = [p for p in source if Fraction(3, 10) <= p[0] < Fraction(85, 100)]
    assert len(audio) == len(kept) and audio[0][0] >= 0
    assert [a[2] for a in audio] == [k[2] for k in kept]  # the same packets, shifted

    out2 = tmp_path / "max.mp4"
    code, text = _run(capsys, clip, "--out", out2, "--gt", clip.with_suffix(".json"),
                      "--weights", tiny_ckpt, "--max-frames", 4)
    assert code == 0, text
    assert _frame_times(out2) == [Fraction(i, FPS) for i in range(4)]


def test_street_demo_h264(realdata_dir, tiny_ckpt, tmp_path, capsys) -> None:
    src = realdata_dir / "video" / "street_demo.mp4"
    boxes = _box_file(tmp_path / "boxes.json", 5, [380.0, 120.0, 160.0, 380.0])
    out, jsonl = tmp_path / "street.mp4", tmp_path / "street.jsonl"
    code, text = _run(capsys, src, "--out", out, "--json", jsonl, "--boxes", boxes,
                      "--weights", tiny_ckpt, "--track", "--smooth")
    assert code == 0, text
    assert _frame_times(out) == _frame_times(src) and len(_frame_times(src)) == 5
    assert _video_info(out)["rate"] == _video_info(src)["rate"]
    assert _video_info(out)["size"] == (960, 540)
    records = _lines(jsonl)
    assert len(records) == 5 and all(r["boxes"] == 1 for r in records)
    assert all("track_id" in p for r in records for p in r["poses"])


def test_vtest_avi_first_frames(realdata_dir, tiny_ckpt, tmp_path, capsys) -> None:
    src = realdata_dir / "video" / "vtest.avi"
    boxes = _box_file(tmp_path / "boxes.json", 30, [300.0, 150.0, 80.0, 200.0])
    out, jsonl = tmp_path / "vtest.mp4", tmp_path / "vtest.jsonl"
    code, text = _run(capsys, src, "--out", out, "--json", jsonl, "--boxes", boxes,
                      "--weights", tiny_ckpt, "--max-frames", 30, "--stride", 3,
                      "--batch-frames", 5)
    assert code == 0, text
    times = _frame_times(out)
    assert times == _frame_times(src)[:30] == [Fraction(i, 10) for i in range(30)]
    assert _video_info(out)["rate"] == 10
    assert [r["frame_index"] for r in _lines(jsonl)] == list(range(0, 30, 3))


def test_ctrl_c_finishes_the_batch_and_closes_outputs(clip, tiny_ckpt, tmp_path, capsys,
                                                      monkeypatch) -> None:
    calls = []
    predict = PoseEstimator.predict

    def interrupted(self, images, boxes):
        calls.append(len(images))
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends, mid-batch
        return predict(self, images, boxes)

    monkeypatch.setattr(PoseEstimator, "predict", interrupted)
    out, jsonl, coco = tmp_path / "out.mp4", tmp_path / "p.jsonl", tmp_path / "d.json"
    code, text = _run(capsys, clip, "--out", out, "--json", jsonl, "--coco", coco, "--gt",
                      clip.with_suffix(".json"), "--weights", tiny_ckpt, "--batch-frames", 2)
    assert code == 130, text
    assert "interrupted (SIGINT) after 4 frames" in text
    assert calls == [2, 2]
    assert _frame_times(out) == [Fraction(i, FPS) for i in range(4)]
    assert [r["frame_index"] for r in _lines(jsonl)] == [0, 1, 2, 3]
    assert len(json.loads(coco.read_text())["images"]) == 4


def test_keyboard_interrupt_inside_the_network_keeps_valid_outputs(clip, tiny_ckpt, tmp_path,
                                                                   capsys, monkeypatch) -> None:
    predict = PoseEstimator.predict
    calls = []

    def broken(self, images, boxes):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return predict(self, images, boxes)

    monkeypatch.setattr(PoseEstimator, "predict", broken)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "p.jsonl"
    code, text = _run(capsys, clip, "--out", out, "--json", jsonl, "--gt",
                      clip.with_suffix(".json"), "--weights", tiny_ckpt, "--batch-frames", 2)
    assert code == 130, text
    assert _frame_times(out) == [Fraction(i, FPS) for i in range(4)]  # two whole batches
    assert len(_lines(jsonl)) == 4


def _faststart_copy(src: Path, dst: Path) -> None:
    """Remux with the index (moov) first, as streaming MP4s are."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "+faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for packet in i.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                o.mux(packet)


def test_truncated_video_ends_with_a_message_and_valid_outputs(clip, tiny_ckpt, tmp_path,
                                                               capsys) -> None:
    whole = tmp_path / "whole.mp4"
    _faststart_copy(clip, whole)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    out, jsonl = tmp_path / "out.mp4", tmp_path / "p.jsonl"
    code, text = _run(capsys, cut, "--out", out, "--json", jsonl, "--gt",
                      clip.with_suffix(".json"), "--weights", tiny_ckpt)
    assert code == 1, text
    error = [line for line in text.splitlines() if "error:" in line]
    assert len(error) == 1 and str(cut) in error[0]
    frames = _frame_times(out)
    assert 0 < len(frames) < FRAMES and frames == _decodable_times(cut)
    assert len(_lines(jsonl)) == len(frames)

    # Cut before its index (the usual MP4 layout): nothing can be read, and nothing is written.
    no_index = tmp_path / "no_index.mp4"
    no_index.write_bytes(clip.read_bytes()[: int(clip.stat().st_size * 0.6)])
    out2 = tmp_path / "out2.mp4"
    code, text = _run(capsys, no_index, "--out", out2, "--gt", clip.with_suffix(".json"),
                      "--weights", tiny_ckpt)
    assert code == 2 and "cannot read the video" in text and not out2.exists()


def test_truncated_avi(realdata_dir, tiny_ckpt, tmp_path, capsys) -> None:
    cut = tmp_path / "cut.avi"
    with open(realdata_dir / "video" / "vtest.avi", "rb") as f:
        cut.write_bytes(f.read(400_000))
    out = tmp_path / "out.mp4"
    boxes = _box_file(tmp_path / "boxes.json", 1, [300.0, 150.0, 80.0, 200.0])
    code, text = _run(capsys, cut, "--out", out, "--boxes", boxes, "--weights", tiny_ckpt)
    assert code == 1 and "truncated" in text, text
    frames = _frame_times(out)
    assert 10 < len(frames) < 795
    assert frames == [Fraction(i, 10) for i in range(len(frames))]


def test_bad_options(clip, tiny_ckpt, tmp_path, capsys) -> None:
    code, text = _run(capsys, clip, "--out", tmp_path / "o.avi", "--weights", tiny_ckpt,
                      "--gt", clip.with_suffix(".json"))
    assert code == 2 and ".mp4" in text
    code, text = _run(capsys, clip, "--boxes", tmp_path / "b.json", "--gt",
                      clip.with_suffix(".json"), "--weights", tiny_ckpt)
    assert code == 2 and "one box source" in text
    code, text = _run(capsys, clip, "--start", 2, "--end", 1, "--weights", tiny_ckpt)
    assert code == 2 and "--start" in text
    code, text = _run(capsys, clip, "--start", 5, "--gt", clip.with_suffix(".json"),
                      "--weights", tiny_ckpt)
    assert code == 2 and "past the end" in text


def test_encoder_failure_is_an_error_and_leaves_no_video(clip, tiny_ckpt, tmp_path, capsys,
                                                         monkeypatch) -> None:
    import mipnet_cli.media.video as video

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(video, "draw_poses", broken)
    out = tmp_path / "out.mp4"
    code, text = _run(capsys, clip, "--out", out, "--gt", clip.with_suffix(".json"),
                      "--weights", tiny_ckpt)
    assert code == 2 and "cannot encode the video (drawing failed)" in text
    assert list(tmp_path.iterdir()) == []  # neither the video nor its temporary file


def _odd_mkv(path: Path, frames: int = 6) -> Path:
    """A 67x51 lossless (FFV1) clip at 8 fps with a 16-bit and an 8-bit PCM audio track."""
    with av.open(str(path), "w") as o:
        v = o.add_stream("ffv1", rate=8)
        v.width, v.height, v.pix_fmt = 67, 51, "bgr0"
        tracks = [o.add_stream(codec, rate=8000, layout="mono")
                  for codec in ("pcm_s16le", "pcm_u8")]
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((51, 67, 3), 40 * i, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 8)
            o.mux(v.encode(frame))
            for a in tracks:
                tone = np.sin(np.arange(1000) / 5)[None]
                u8 = a.codec_context.name == "pcm_u8"
                samples = (128 + 60 * tone).astype(np.uint8) if u8 else \
                    (3000 * tone).astype(np.int16)
                af = av.AudioFrame.from_ndarray(samples, format="u8" if u8 else "s16",
                                                layout="mono")
                af.sample_rate, af.pts = 8000, 1000 * i
                o.mux(a.encode(af))
        o.mux(v.encode(None))
        for a in tracks:
            o.mux(a.encode(None))
    return path


def test_odd_size_and_audio_mp4_cannot_hold(tiny_ckpt, tmp_path, capsys) -> None:
    src = _odd_mkv(tmp_path / "odd.mkv")
    boxes = _box_file(tmp_path / "boxes.json", 6, [10.0, 5.0, 30.0, 40.0])
    out = tmp_path / "out.mp4"
    code, text = _run(capsys, src, "--out", out, "--boxes", boxes, "--weights", tiny_ckpt)
    assert code == 0, text
    assert "66x50" in text and "pcm_u8" in text
    info = _video_info(out)
    assert info["size"] == (66, 50) and info["audio"] == ["pcm_s16le"]
    assert _frame_times(out) == _frame_times(src) == [Fraction(i, 8) for i in range(6)]
    keep_all = tmp_path / "out.mkv"  # Matroska holds 8-bit PCM
    code, text = _run(capsys, src, "--out", keep_all, "--boxes", boxes, "--weights", tiny_ckpt)
    assert code == 0, text
    assert _video_info(keep_all)["audio"] == ["pcm_s16le", "pcm_u8"]
    assert _frame_times(keep_all) == _frame_times(src)


def _person(x: float, y: float, rng: np.random.Generator, conf: float = 0.9) -> Pose:
    """A standing figure (17 joints) around (x, y), 100 px tall, with 1 px joint noise."""
    template = np.array([
        [0, -45], [-3, -48], [3, -48], [-6, -46], [6, -46], [-12, -30], [12, -30], [-16, -12],
        [16, -12], [-18, 4], [18, 4], [-8, 5], [8, 5], [-9, 28], [9, 28], [-9, 50], [9, 50],
    ], np.float64)
    kps = np.concatenate([template + [x, y] + rng.normal(0, 1, template.shape),
                          np.full((17, 1), conf)], axis=1)
    return Pose(keypoints=kps.astype(np.float32), score=conf, box_id=0, instance=0)


def test_tracker_keeps_ids_of_slowly_moving_people() -> None:
    rng = np.random.default_rng(0)
    tracker = PoseTracker(COCO17, max_age=3)
    history = []
    for frame in range(30):
        people = [_person(100 + 3 * frame, 200, rng), _person(400 - 2 * frame, 210, rng)]
        if 10 <= frame < 12:
            people = people[:1]  # the second person is missed for two frames
        if frame >= 20:
            people.append(_person(250, 100, rng))  # a newcomer
        order = rng.permutation(len(people))  # detection order means nothing
        shuffled = [people[i] for i in order]
        tracker.update(shuffled, frame / 30)
        history.append([p.track_id for p in people])
    first = {ids[0] for ids in history}
    second = {ids[1] for ids in history if len(ids) > 1}
    newcomer = {ids[2] for ids in history[20:]}
    assert len(first) == len(second) == len(newcomer) == 1  # one id per person throughout
    assert first | second | newcomer == {1, 2, 3}
    assert tracker.next_id == 4

    # Unseen for longer than max_age (3 updates): a new id, even at the same place.
    for k in range(4):
        tracker.update([], 1.0 + k / 30)
    back = _person(187, 200, rng)
    tracker.update([back], 1.2)
    assert back.track_id == 4


def test_tracker_follows_small_people_by_their_boxes() -> None:
    """Small, distant people: their joints flicker around the confidence threshold and often
    none is confident, but their person boxes move smoothly (vtest.avi, 200 frames: 269 ids
    before boxes were used, 39 after)."""
    rng = np.random.default_rng(2)
    tracker = PoseTracker(COCO17)
    ids = []
    for frame in range(20):
        x = 100 + 2 * frame
        kps = np.zeros((17, 3), np.float32)
        kps[:, :2] = [x + 10, 150] + rng.normal(0, 6, (17, 2))  # joints scattered in the box
        kps[:, 2] = rng.uniform(0.05, 0.25, 17)
        kps[rng.integers(17), 2] = 0.35 if frame % 2 else 0.1  # one joint, every other frame
        pose = Pose(keypoints=kps, score=0.5, box_id=0, instance=0,
                    box_xywh=[x, 120, 20, 60])
        tracker.update([pose], frame / 10)
        ids.append(pose.track_id)
    assert set(ids) == {1}
    # A secondary instance shares its box with the box's own person: it is followed by its own
    # joints, so the two keep apart.
    own, other = _person(300, 200, rng), _person(330, 200, rng)
    tracker = PoseTracker(COCO17)
    pairs = []
    for frame in range(5):
        own, other = _person(300 + frame, 200, rng), _person(330 + frame, 200, rng)
        own.box_xywh = other.box_xywh = [280 + frame, 150, 40, 100]
        other.instance = 1
        tracker.update([other, own] if frame % 2 else [own, other], frame / 10)
        pairs.append((own.track_id, other.track_id))
    assert set(pairs) == {(1, 2)}


def test_one_euro_filter_reduces_jitter_and_follows_motion() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(120) / 30.0
    still = 200 + rng.normal(0, 2.0, (120, 17, 2))
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    smoothed = np.stack([filt(x, ti) for x, ti in zip(still, t, strict=True)])
    raw_jitter = np.abs(np.diff(still[30:], axis=0)).mean()
    jitter = np.abs(np.diff(smoothed[30:], axis=0)).mean()
    assert jitter < 0.3 * raw_jitter
    assert np.abs(smoothed[30:] - 200).std() < 0.5 * np.abs(still[30:] - 200).std()

    # A fast walk (300 px/s): the adaptive cutoff keeps the lag to a few pixels.
    moving = 300 * t[:, None, None] + rng.normal(0, 2.0, (120, 17, 2))
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    followed = np.stack([filt(x, ti) for x, ti in zip(moving, t, strict=True)])
    lag = np.abs(followed[60:] - 300 * t[60:, None, None]).mean()
    assert lag < 5.0

    # Through the tracker: a standing person's joints jitter less.
    tracker = PoseTracker(COCO17, smooth=True)
    raw, smooth = [], []
    for k in range(40):
        pose = _person(300, 300, rng)
        raw.append(pose.keypoints[:, :2].copy())
        tracker.update([pose], k / 30)
        smooth.append(pose.keypoints[:, :2])
        assert pose.track_id == 1
    raw_jitter = np.abs(np.diff(raw[10:], axis=0)).mean()
    assert np.abs(np.diff(smooth[10:], axis=0)).mean() < 0.4 * raw_jitter
