"""The synthetic occluded-crowd generator: determinism, COCO validity, visibility, crowding,
real layouts, videos with audio, and the `mipnet synth` command."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from pycocotools.coco import COCO

from mipnet_cli.core.errors import MipnetError
from mipnet_cli.core.keypoints import COCO17, CROWDPOSE14
from mipnet_cli.synth import (
    ANNOTATION_FILE,
    IMAGE_DIR,
    SampleRenderer,
    SynthConfig,
    SynthStats,
    VideoConfig,
    generate_dataset,
    generate_video,
    load_layouts,
    render_scene,
)
from mipnet_cli.synth import video as video_module
from mipnet_cli.synth.body import PoseParams, pose_figure, sample_proportions
from mipnet_cli.synth.draw import KEYPOINT_PARTS, sample_appearance
from mipnet_cli.synth.layouts import figure_from_keypoints
from mipnet_cli.synth.scene import DISTRACTOR, Person, box_iou, place_at

SMALL = dict(width=160, height=120, min_people=2, max_people=4)


def _read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    cfg = SynthConfig(num_images=4, seed=7, **SMALL)
    generate_dataset(tmp_path / "a", cfg, workers=1)
    generate_dataset(tmp_path / "b", cfg, workers=2)
    a, b = _read_tree(tmp_path / "a"), _read_tree(tmp_path / "b")
    assert sorted(a) == [ANNOTATION_FILE] + [f"{IMAGE_DIR}/{i:06d}.jpg" for i in range(4)]
    assert a == b
    generate_dataset(tmp_path / "c", SynthConfig(num_images=4, seed=8, **SMALL))
    c = _read_tree(tmp_path / "c")
    assert c[ANNOTATION_FILE] != a[ANNOTATION_FILE]
    assert c[f"{IMAGE_DIR}/000000.jpg"] != a[f"{IMAGE_DIR}/000000.jpg"]


def test_dataset_is_valid_coco(tmp_path):
    cfg = SynthConfig(num_images=5, seed=1, overlap=0.8, image_format="png", **SMALL)
    stats = generate_dataset(tmp_path, cfg)
    coco = COCO(str(tmp_path / ANNOTATION_FILE))
    assert coco.loadCats(1)[0]["keypoints"] == list(COCO17.names)
    assert len(coco.getImgIds()) == 5 and stats.images == 5
    assert len(coco.getAnnIds()) == stats.people > 0
    for img in coco.loadImgs(coco.getImgIds()):
        assert (tmp_path / IMAGE_DIR / img["file_name"]).is_file()
        assert (img["width"], img["height"]) == (160, 120)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            kps = np.array(ann["keypoints"]).reshape(17, 3)
            assert set(kps[:, 2]) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum()) > 0
            mask = coco.annToMask(ann)
            assert mask.shape == (120, 160)
            # Polygons of the visible pixels cover about the visible area.
            assert abs(int(mask.sum()) - ann["area"]) <= 0.35 * ann["area"] + 30
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 160 and y + h <= 120 and w > 0 and h > 0
            # Boxes span the whole body: every labelled keypoint lies inside.
            lab = kps[kps[:, 2] > 0]
            assert (lab[:, 0] >= x - 1).all() and (lab[:, 0] <= x + w + 1).all()
            assert (lab[:, 1] >= y - 1).all() and (lab[:, 1] <= y + h + 1).all()
    info = json.loads((tmp_path / ANNOTATION_FILE).read_text())["info"]
    assert info["crowding"]["people"] == stats.people


def test_visibility_is_what_the_label_map_shows():
    gen = SampleRenderer(SynthConfig(overlap=1.0, min_visible=0.0, **SMALL))
    counts = {"v2": 0, "others": 0, "self": 0, "outside": 0}
    for index in range(12):
        scene = gen.render(index)
        h, w = scene.label.shape
        for person in scene.people:
            for k, (x, y, v) in enumerate(person.keypoints):
                inside = 0 <= x < w and 0 <= y < h
                assert (v == 0) == (not inside)
                if v == 0:
                    counts["outside"] += 1
                    continue
                owner = scene.label[int(y), int(x)]
                if v == 2:
                    assert owner == person.index + 1
                    counts["v2"] += 1
                elif owner != person.index + 1:
                    counts["others"] += 1
                else:  # covered by a part of its own body in front of it, or a face turned away
                    assert scene.parts[int(y), int(x)] not in KEYPOINT_PARTS[k] or k < 5
                    counts["self"] += 1
    assert min(counts["v2"], counts["others"], counts["self"]) > 20, counts


def _lone_figure(yaw: float, rng: np.random.Generator) -> Person:
    fig = pose_figure(PoseParams(), sample_proportions(rng), yaw)
    return Person(place_at(fig, 100.0, 20.0, 8.0), sample_appearance(rng))


def test_someone_in_front_hides_exactly_what_they_cover():
    rng = np.random.default_rng(3)
    base = np.zeros((120, 140, 3), np.uint8)
    back = _lone_figure(0.0, rng)
    alone = render_scene([back], base).people[0]
    assert (alone.keypoints[:, 2] == 2).all()  # facing the camera, standing: all visible
    twin = Person(back.figure, back.look)  # the same person again, painted in front
    hidden, front = render_scene([back, twin], base).people
    assert (hidden.keypoints[:, 2] == 1).all() and hidden.visible_area == 0
    assert (front.keypoints[:, 2] == 2).all()
    # A person shifted sideways hides only the keypoints that fall on their pixels.
    side = Person(back.figure.moved(12.0, 0.0), sample_appearance(rng))
    scene = render_scene([back, side], base)
    kps = scene.people[0].keypoints
    on_front = scene.label[kps[:, 1].astype(int), kps[:, 0].astype(int)] == 2
    assert on_front.any() and (~on_front).any()
    assert (kps[on_front, 2] == 1).all() and (kps[~on_front, 2] == 2).all()
    # A foreground distractor over everything hides everything.
    wall = (np.ones((120, 140), bool), np.full((120, 140, 3), 128, np.uint8))
    scene = render_scene([back], base, [wall])
    assert (scene.label == DISTRACTOR).all() and (scene.people[0].keypoints[:, 2] == 1).all()


def test_face_follows_the_head():
    rng = np.random.default_rng(0)
    base = np.zeros((120, 140, 3), np.uint8)
    front = render_scene([_lone_figure(0.0, rng)], base).people[0].keypoints
    # Facing the camera: the person's left eye and ear are on the image right, nose between.
    assert front[1, 0] > front[0, 0] > front[2, 0]
    assert front[3, 0] > front[1, 0] and front[2, 0] > front[4, 0]
    back = render_scene([_lone_figure(np.pi, rng)], base).people[0].keypoints
    assert back[1, 0] < back[0, 0] < back[2, 0]
    assert (back[:3, 2] == 1).all()  # nose and eyes are behind the head
    assert (back[5:, 2] == 2).all()
    profile = render_scene([_lone_figure(np.pi / 2, rng)], base).people[0].keypoints
    # Facing image right shows the person's right side: nose right of the right ear, the left
    # ear hidden behind the head and the left shoulder behind the chest.
    assert profile[0, 0] > profile[4, 0]
    assert profile[[0, 4], 2].tolist() == [2, 2] and profile[3, 2] == 1
    assert profile[5, 2] == 1 and profile[6, 2] == 2


def test_overlap_knob_raises_measured_crowding():
    fractions = []
    for overlap in (0.0, 0.9):
        gen = SampleRenderer(SynthConfig(overlap=overlap, width=128, height=96, min_people=3,
                                         max_people=5))
        stats = SynthStats()
        for i in range(16):
            stats.add(gen.render(i).people)
        fractions.append(stats.crowded_fraction)
    assert fractions[0] < 0.1 and fractions[1] > 0.55, fractions


def test_stats_match_hand_counts():
    gen = SampleRenderer(SynthConfig(overlap=0.7, **SMALL))
    stats = SynthStats()
    people_lists = [gen.render(i).people for i in range(4)]
    for people in people_lists:
        stats.add(people)
    crowded = total = 0
    for people in people_lists:
        boxes = np.array([p.box for p in people])
        iou = box_iou(boxes, boxes) - np.eye(len(people))
        crowded += int((iou.max(1) > 0.5).sum())
        total += len(people)
    assert stats.people == total and stats.crowded_people == crowded
    v = np.concatenate([p.keypoints[:, 2] for ps in people_lists for p in ps])
    assert stats.occluded_fraction == pytest.approx((v == 1).sum() / (v > 0).sum())


def test_crowdpose_joints_map_onto_the_figure():
    kps = np.zeros((14, 3))
    # A person facing the camera: left joints on the image right.
    xy = {0: (63, 40), 1: (37, 40), 2: (64, 60), 3: (36, 60), 4: (66, 80), 5: (34, 80),
          6: (56, 80), 7: (44, 80), 8: (57, 105), 9: (43, 105), 10: (58, 130), 11: (42, 130),
          12: (50, 8), 13: (50, 32)}
    for k, (x, y) in xy.items():
        kps[k] = (x, y, 2)
    kps[9, 2] = 0  # an unlabelled right knee gets filled in between hip and ankle
    fig = figure_from_keypoints(kps, CROWDPOSE14, np.random.default_rng(0))
    labelled = [k for k in range(12) if kps[k, 2] > 0]
    assert np.allclose(fig.points[[5 + k for k in labelled], :2], kps[labelled, :2])
    assert 95 < fig.points[14, 1] < 130
    head = fig.points[17, :2]
    assert 8 < head[1] < 32 and abs(head[0] - 50) < 3
    assert fig.head_axes[2, 2] > 0.8  # shoulders say it faces the camera, so does the face
    nose, leye, reye = fig.points[0], fig.points[1], fig.points[2]
    assert leye[0] > nose[0] > reye[0]


def test_layouts_from_crowdpose_put_people_at_the_boxes(realdata_dir):
    path = realdata_dir / "crowdpose_val_annotations.json"
    layouts = load_layouts(path)
    images, kset = layouts
    assert kset is CROWDPOSE14 and len(images) > 1000
    gen = SampleRenderer(SynthConfig(layouts=str(path), max_size=320, min_visible=0.0),
                         layouts)
    best = []
    for i in range(6):
        layout = images[int(gen.order[i])].scaled(320)
        scene = gen.render(i)
        assert scene.image.shape[:2] == (layout.height, layout.width)
        ann = np.array([[*p.box[:2], *(p.box[:2] + p.box[2:])] for p in layout.people])
        out = np.array([p.box for p in scene.people]).reshape(-1, 4)
        best.extend(box_iou(ann, out).max(1))
    assert np.median(best) > 0.6 and np.mean(np.array(best) > 0.5) > 0.7, best


def test_layout_datasets_are_the_same_in_worker_processes(realdata_dir, tmp_path):
    cfg = SynthConfig(num_images=3, layouts=str(realdata_dir / "crowdpose_val_annotations.json"),
                      max_size=200)
    generate_dataset(tmp_path / "one", cfg, workers=1)
    generate_dataset(tmp_path / "two", cfg, workers=2)
    assert _read_tree(tmp_path / "one") == _read_tree(tmp_path / "two")


def test_bad_layout_files_are_named(tmp_path):
    with pytest.raises(MipnetError, match="nope.json"):
        load_layouts(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(MipnetError, match="bad.json.*annotations"):
        load_layouts(bad)
    with pytest.raises(MipnetError, match="overlap"):
        SynthConfig(overlap=1.5).validate()


def test_video_frames_fps_audio_and_tracks(tmp_path):
    path = tmp_path / "clip.mp4"
    cfg = VideoConfig(frames=10, fps=10.0, width=160, height=120, min_people=3, max_people=3,
                      seed=2)
    stats = generate_video(path, cfg)
    with av.open(str(path)) as container:
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        assert vstream.average_rate == 10 and (vstream.width, vstream.height) == (160, 120)
        assert astream.codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 10
    with av.open(str(path)) as container:
        audio = sum(f.samples for f in container.decode(audio=0))
    assert abs(audio / 44100 - 1.0) < 0.1
    gt = json.loads(path.with_suffix(".json").read_text())
    assert [im["frame_index"] for im in gt["images"]] == list(range(10))
    assert gt["images"][3]["timestamp"] == pytest.approx(0.3)
    tracks: dict[int, list[int]] = {}
    for ann in gt["annotations"]:
        tracks.setdefault(ann["image_id"], []).append(ann["track_id"])
    assert all(len(t) == len(set(t)) and set(t) <= {1, 2, 3} for t in tracks.values())
    assert stats.images == 10 and stats.people == len(gt["annotations"]) > 10
    # People move between frames and the pictures change with them.
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0

    again = tmp_path / "again" / "clip.mp4"
    generate_video(again, cfg)
    assert again.with_suffix(".json").read_text() == path.with_suffix(".json").read_text()


def test_video_without_audio_and_the_mpeg4_fallback(tmp_path, monkeypatch):
    quiet = tmp_path / "quiet.mp4"
    monkeypatch.setattr(video_module, "video_codec", lambda: "mpeg4")
    generate_video(quiet, VideoConfig(frames=3, fps=5.0, width=96, height=64, audio=False))
    with av.open(str(quiet)) as container:
        assert len(container.streams.audio) == 0
        assert container.streams.video[0].codec_context.name == "mpeg4"
        assert len(list(container.decode(video=0))) == 3
    with pytest.raises(MipnetError, match="even"):
        VideoConfig(width=95).validate()


def test_cli_writes_and_reports(tmp_path, capsys):
    from mipnet_cli.cli import run_app

    out = tmp_path / "set"
    assert run_app(["synth", str(out), "-n", "2", "--width", "96", "--height", "64",
                    "--workers", "1", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "box IoU > 0.5" in printed and "images/s" in printed
    assert len(json.loads((out / ANNOTATION_FILE).read_text())["images"]) == 2
    assert run_app(["synth", str(tmp_path / "x"), "--overlap", "2"]) == 2
    assert "--overlap" in capsys.readouterr().err
    assert run_app(["synth", str(tmp_path / "y"), "--layouts", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err
