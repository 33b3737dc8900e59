"""The small person detector, its training on synthetic scenes, box AP and the demo fallback."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from mipnet_cli.checkpoints.format import save_checkpoint
from mipnet_cli.checkpoints.zoo import ZooEntry
from mipnet_cli.cli import run_app
from mipnet_cli.core.errors import MipnetError
from mipnet_cli.core.results import Box
from mipnet_cli.detect.person_rcnn import PERSON_ASPECT_RATIOS, SMALL_PERSON_DETECTOR
from mipnet_cli.detect.torchvision_detectors import PersonDetector, detector_names
from mipnet_cli.media.writers import read_frame_records
from mipnet_cli.models import build_model
from mipnet_cli.synth import SynthConfig, VideoConfig, generate_dataset, generate_video
from mipnet_cli.train.detector import (
    DetectorTrainConfig,
    DetectorTrainer,
    PersonBoxes,
    evaluate_boxes,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Four synthetic 160x128 crowd images with their COCO annotations."""
    root = tmp_path_factory.mktemp("scenes")
    generate_dataset(root, SynthConfig(num_images=4, seed=5, width=160, height=128,
                                       min_people=2, max_people=3))
    return root


def _config(scenes: Path, out: Path, **overrides) -> DetectorTrainConfig:
    values = {
        "train_ann": str(scenes / "annotations.json"), "train_images": str(scenes / "images"),
        "epochs": 2, "batch_size": 2, "lr": 2e-3, "lr_steps": (), "warmup_steps": 0,
        "max_steps_per_epoch": 2, "out_dir": str(out), "seed": 1,
    }
    values.update(overrides)
    return DetectorTrainConfig(**values)


def test_small_person_detector_builds_and_runs() -> None:
    assert SMALL_PERSON_DETECTOR in detector_names()
    torch.manual_seed(0)
    det = PersonDetector(SMALL_PERSON_DETECTOR, weights=None, score_thresh=0.0)
    assert det.num_classes is None and det.model.roi_heads.box_predictor.cls_score.out_features == 2
    assert sum(p.numel() for p in det.model.parameters()) < 5_000_000
    assert det.model.rpn.anchor_generator.aspect_ratios == (PERSON_ASPECT_RATIOS,)
    boxes = det.detect([np.zeros((120, 200, 3), np.uint8)])[0]
    assert all(isinstance(b, Box) and b.xyxy.shape == (4,) for b in boxes)
    with pytest.raises(MipnetError, match="no downloadable weights"):
        PersonDetector(SMALL_PERSON_DETECTOR)


def test_person_boxes_dataset_flips_boxes_with_the_image(scenes: Path) -> None:
    plain = PersonBoxes(scenes / "annotations.json", scenes / "images")
    flipped = PersonBoxes(scenes / "annotations.json", scenes / "images", flip_prob=1.0)
    image, target = plain[0]
    mirror, mirrored = flipped[0]
    assert image.shape == (3, 128, 160) and len(target["boxes"]) >= 1
    assert torch.equal(mirror, image.flip(-1))
    assert torch.allclose(mirrored["boxes"][:, [2, 0]], 160 - target["boxes"][:, [0, 2]])
    assert (target["labels"] == 1).all()


def test_a_few_steps_lower_the_loss_and_write_checkpoints(scenes: Path, tmp_path: Path) -> None:
    cfg = _config(scenes, tmp_path / "fit", epochs=6, batch_size=4, max_steps_per_epoch=1,
                  flip_prob=0.0, train_sizes=(256,), grad_clip=1.0)
    history = DetectorTrainer(cfg, device="cpu").fit()
    losses = [(r["loss"], r["loss_objectness"]) for r in history]
    assert losses[-1][0] < 0.9 * losses[0][0] and losses[-1][1] < 0.7 * losses[0][1], losses
    run = tmp_path / "fit"
    assert len((run / "log.jsonl").read_text().splitlines()) == 6
    meta = torch.load(run / "last.pt", weights_only=True)
    assert meta["builder"] == SMALL_PERSON_DETECTOR and meta["num_classes"] == 2
    prov = meta["provenance"]
    assert prov["epochs"] == 6 and "CPU" in prov["hardware"] and prov["train_time_s"] > 0


def test_resume_after_interruption_matches_uninterrupted_run(scenes: Path,
                                                             tmp_path: Path) -> None:
    straight = DetectorTrainer(_config(scenes, tmp_path / "a"), device="cpu")
    straight.fit()
    interrupted = DetectorTrainer(_config(scenes, tmp_path / "b"), device="cpu")
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(stop_after=(1, 1))  # dies during the second epoch
    resumed = DetectorTrainer(_config(scenes, tmp_path / "b"), device="cpu")
    resumed.resume()
    assert resumed.epoch == 1 and resumed.step == 2
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_save_load_round_trip(scenes: Path, tmp_path: Path) -> None:
    torch.manual_seed(2)
    det = PersonDetector(SMALL_PERSON_DETECTOR, weights=None, num_classes=2, score_thresh=0.0)
    image = PersonBoxes(scenes / "annotations.json", scenes / "images")[0][0]
    rgb = (image.permute(1, 2, 0) * 255).round().byte().numpy()
    want = det.detect([rgb])[0]
    pt, st = tmp_path / "det.pt", tmp_path / "det.safetensors"
    det.save(pt, {"note": "test"})
    det.save(st, {"note": "test"}, half=True)
    exact = PersonDetector(SMALL_PERSON_DETECTOR, weights_path=pt, score_thresh=0.0)
    got = exact.detect([rgb])[0]
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got[0].xyxy, want[0].xyxy, atol=1e-4)
    half = PersonDetector(SMALL_PERSON_DETECTOR, weights_path=st)
    assert half.num_classes == 2
    for key, value in det.model.state_dict().items():
        loaded = half.model.state_dict()[key]
        assert loaded.dtype == value.dtype
        if value.is_floating_point():
            torch.testing.assert_close(loaded, value, atol=1e-3, rtol=1e-3)
    assert st.stat().st_size < 0.6 * pt.stat().st_size
    with pytest.raises(MipnetError, match="saved from detector"):
        PersonDetector("fasterrcnn_mobilenet_v3_large_320_fpn", weights_path=st)


class _Oracle:
    """A 'detector' that returns the ground-truth boxes of the images it is shown, in order."""

    batch_size = 2

    def __init__(self, boxes: list[np.ndarray]) -> None:
        self.queue = list(boxes)

    def detect(self, images):
        return [[Box(xyxy=b, score=0.9, source="detector", id=k)
                 for k, b in enumerate(self.queue.pop(0))] for _ in images]


def test_box_ap(scenes: Path) -> None:
    data = PersonBoxes(scenes / "annotations.json", scenes / "images")
    truth = [data[i][1]["boxes"].double().numpy() for i in range(len(data))]
    perfect = evaluate_boxes(_Oracle(truth), scenes / "annotations.json", scenes / "images")
    assert set(perfect) == {"AP", "AP50", "AP75", "APm", "APl", "AR100", "recall50"}
    assert perfect["AP"] == pytest.approx(1.0) and perfect["recall50"] == pytest.approx(1.0)
    shifted = [t + np.array([30.0, 0.0, 30.0, 0.0]) for t in truth]
    worse = evaluate_boxes(_Oracle(shifted), scenes / "annotations.json", scenes / "images")
    assert worse["AP"] < 0.5
    torch.manual_seed(0)
    untrained = PersonDetector(SMALL_PERSON_DETECTOR, weights=None, score_thresh=0.05)
    metrics = evaluate_boxes(untrained, scenes / "annotations.json", scenes / "images")
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())


def test_config_file_and_command(scenes: Path, tmp_path: Path, capsys) -> None:
    shipped = DetectorTrainConfig.load(ROOT / "configs" / "detector_synth.toml")
    assert shipped.detector == SMALL_PERSON_DETECTOR
    assert Path(shipped.train_ann).is_absolute() and shipped.train_ann.endswith("annotations.json")
    with pytest.raises(MipnetError, match="unknown training settings: lrr"):
        DetectorTrainConfig.load(ROOT / "configs" / "detector_synth.toml", ["lrr=1"])
    config = tmp_path / "det.toml"
    config.write_text(f'train_ann = "{scenes / "annotations.json"}"\n'
                      f'train_images = "{scenes / "images"}"\n'
                      f'val_ann = "{scenes / "annotations.json"}"\n'
                      f'val_images = "{scenes / "images"}"\n')
    export = tmp_path / "person.safetensors"
    code = run_app(["train-detector", str(config), "--out", str(tmp_path / "run"),
                    "--epochs", "1", "--batch-size", "2", "--set", "max_steps_per_epoch=1",
                    "--export", str(export), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "AP50" in out and "recall50" in out and export.is_file()
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text())
    assert set(record["val"]) >= {"AP", "AP50"} and record["images_per_s"] > 0
    assert PersonDetector(SMALL_PERSON_DETECTOR, weights_path=export).num_classes == 2


def test_predict_and_video_fall_back_to_the_shipped_detector_offline(
        scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import mipnet_cli.detect.sources as sources

    torch.manual_seed(0)
    det = PersonDetector(SMALL_PERSON_DETECTOR, weights=None, num_classes=2)
    det.save(tmp_path / "demo.safetensors", half=True)
    entry = ZooEntry(name="demo", kind="detector", file=str(tmp_path / "demo.safetensors"),
                     builder=SMALL_PERSON_DETECTOR, default=True, demo=True)
    monkeypatch.setattr(sources, "default_entry", lambda kind: entry)
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))  # empty cache, and no network

    def offline(url, dst, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    pose = tmp_path / "pose.safetensors"
    save_checkpoint(pose, build_model("hrnet_w8_tiny", num_instances=2))
    image = str(scenes / "images" / "000000.jpg")
    try:
        code = run_app(["predict", image, "--weights", str(pose), "--device", "cpu",
                        "--no-flip", "--det-thresh", "0.0"])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "cannot be downloaded" in err and "shipped detector demo" in err
        assert "synthetic" in err
        # Named explicitly, the shipped builder loads the shipped weights, without the notice.
        code = run_app(["predict", image, "--weights", str(pose), "--device", "cpu",
                        "--no-flip", "--detector", SMALL_PERSON_DETECTOR])
        err = capsys.readouterr().err
        assert code == 0 and "shipped detector" not in err, err
        clip = tmp_path / "clip.mp4"
        generate_video(clip, VideoConfig(frames=3, fps=5, width=128, height=96, seed=1))
        code = run_app(["video", str(clip), "--json", str(tmp_path / "clip.jsonl"),
                        "--weights", str(pose), "--device", "cpu", "--no-flip"])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "shipped detector demo" in err
        records, end = read_frame_records(tmp_path / "clip.jsonl")
        assert len(records) == 3 and end["complete"]
    finally:
        torch.hub.set_dir(old_hub)
