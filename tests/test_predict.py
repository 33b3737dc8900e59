"""`mipnet predict` end to end on real photos, its writers, and bad inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mipnet_cli.checkpoints.format import save_checkpoint
from mipnet_cli.cli import run_app
from mipnet_cli.core.keypoints import COCO17
from mipnet_cli.core.results import ImagePoses, Pose
from mipnet_cli.detect.torchvision_detectors import PersonDetector
from mipnet_cli.evaluate.coco import coco_keypoint_metrics
from mipnet_cli.media.writers import (
    coco_dataset,
    pose_results,
    unique_names,
    write_coco_dataset,
    write_pose_results,
)
from mipnet_cli.models import build_model

SETS = {"coco": "test_coco.json", "ochuman": "test_ochuman.json"}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A randomly initialised hrnet_w8_tiny MIPNet (N=2) in our checkpoint format."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, build_model("hrnet_w8_tiny", num_instances=2))
    return path


def _leftovers(*folders: Path) -> list[Path]:
    """Temporary files of the atomic writers (hidden names) left in the folders."""
    return [p for f in folders for p in f.rglob(".*")]


def _gt(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(SETS))
def test_predict_gt_boxes_end_to_end(realdata_dir, tiny_ckpt, tmp_path, capsys, name) -> None:
    folder = realdata_dir / "mmpose_tests" / name
    ann = folder / SETS[name]
    photos = sorted(folder.glob("*.jpg"))
    results, dataset, out = tmp_path / "r.json", tmp_path / "d.json", tmp_path / "ov"
    code = run_app(["predict", "--no-recover",
                    *map(str, photos), "--gt", str(ann), "--weights", str(tiny_ckpt),
                    "--json", str(results), "--coco", str(dataset), "--out", str(out),
                    "--device", "cpu", "--show-boxes"])
    assert code == 0, capsys.readouterr()
    gt = _gt(ann)
    ann_image = {a["id"]: a["image_id"] for a in gt["annotations"]}
    people = sum(not a.get("iscrowd", 0) for a in gt["annotations"])

    res = json.loads(results.read_text())
    assert len(res) >= people  # every GT box keeps at least its own instance here
    for r in res:
        assert set(r) >= {"image_id", "category_id", "keypoints", "score", "bbox", "box_id",
                          "instance"}
        assert ann_image[r["box_id"]] == r["image_id"]  # the pose comes from a GT box there
        assert r["instance"] in (0, 1) and len(r["keypoints"]) == 51 and len(r["bbox"]) == 4
    from pycocotools.coco import COCO

    coco_gt = COCO(str(ann))
    assert len(coco_gt.loadRes(str(results)).anns) == len(res)
    metrics = coco_keypoint_metrics(ann, res)
    assert 0.0 <= metrics["AP"] <= 1.0

    ds = COCO(str(dataset))
    by_name = {im["file_name"]: im for im in gt["images"]}
    assert len(ds.imgs) == len(photos)
    for img in ds.imgs.values():  # ids, names and sizes agree with the annotation file
        ref = by_name[img["file_name"]]
        assert (img["id"], img["width"], img["height"]) == (ref["id"], ref["width"],
                                                            ref["height"])
    assert len(ds.anns) == len(res)
    assert ds.cats[1]["keypoints"] == list(COCO17.names) and len(ds.cats[1]["skeleton"]) == 19
    for a in ds.anns.values():
        assert {"box_id", "instance", "score", "area", "num_keypoints"} <= set(a)
        assert a["iscrowd"] == 0 and a["segmentation"] == []

    for photo in photos:
        overlay = cv2.imread(str(out / photo.name))
        assert overlay is not None and overlay.shape[:2] == cv2.imread(str(photo)).shape[:2]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", sorted(SETS))
def test_ground_truth_through_the_writer_scores_one(realdata_dir, tmp_path, name) -> None:
    ann = realdata_dir / "mmpose_tests" / name / SETS[name]
    gt = _gt(ann)
    images = []
    for img in gt["images"]:
        poses = []
        for a in gt["annotations"]:
            if a["image_id"] != img["id"] or a.get("iscrowd", 0) or not a["num_keypoints"]:
                continue
            k = np.array(a["keypoints"], np.float64).reshape(-1, 3)
            k[:, 2] = k[:, 2] > 0
            poses.append(Pose(k, 1.0, a["id"], 0, box_xywh=a["bbox"]))
        images.append(ImagePoses(img["file_name"], img["width"], img["height"], img["id"],
                                 poses=poses))
    path = tmp_path / "gt_results.json"
    assert write_pose_results(path, images) == sum(len(i.poses) for i in images) > 0
    metrics = coco_keypoint_metrics(ann, json.loads(path.read_text()))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)


def test_detection_file_boxes(realdata_dir, tiny_ckpt, tmp_path, capsys) -> None:
    folder = realdata_dir / "mmpose_tests" / "coco"
    dets_path = folder / "test_coco_det_AP_H_56.json"
    dets = json.loads(dets_path.read_text())
    results = tmp_path / "r.json"
    # No --gt: image ids come from the COCO file names (000000000785.jpg -> 785).
    code = run_app(["predict", "--no-recover",
                    str(folder), "--boxes", str(dets_path), "--det-thresh", "0.5",
                    "--weights", str(tiny_ckpt), "--json", str(results), "--device", "cpu",
                    "--no-flip", "--instances", "1"])
    assert code == 0, capsys.readouterr()
    res = json.loads(results.read_text())
    kept = [i for i, d in enumerate(dets) if d["score"] >= 0.5]
    assert {r["box_id"] for r in res} <= set(kept) and len(res) > 0
    for r in res:
        det = dets[r["box_id"]]
        assert r["image_id"] == det["image_id"] and r["instance"] == 0
        assert r["bbox"] == pytest.approx(det["bbox"], abs=1e-3)
    coco_keypoint_metrics(folder / "test_coco.json", res)  # the ids match the annotations
    out = capsys.readouterr().out
    assert "people (boxes)" in out and str(len(kept)) in out


def test_bad_files_are_reported_and_skipped(realdata_dir, tiny_ckpt, tmp_path, capsys) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    shutil.copy(realdata_dir / "mmpose_tests" / "coco" / "000000040083.jpg", photos / "1.jpg")
    Image.new("RGB", (320, 240), (90, 90, 90)).save(photos / "2.png")  # nobody in it
    good = (photos / "1.jpg").read_bytes()
    (photos / "3.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (photos / "4.jpg").write_bytes(b"")
    (photos / "5.jpg").write_text("not an image\n")
    missing = photos / "6.jpg"
    # Image 1 (500x333): one box inside, one sticking out on the left and the bottom.
    dets = [{"image_id": 1, "category_id": 1, "bbox": [38.0, 111.0, 175.0, 175.0], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [-60.0, 200.0, 180.0, 250.0], "score": 0.8},
            {"image_id": 3, "category_id": 1, "bbox": [0.0, 0.0, 50.0, 80.0], "score": 0.9}]
    dets_path = tmp_path / "dets.json"
    dets_path.write_text(json.dumps(dets))
    results, dataset, out = tmp_path / "r.json", tmp_path / "d.json", tmp_path / "ov"
    inputs = [str(photos / f) for f in ("1.jpg", "2.png", "3.jpg", "4.jpg", "5.jpg")]
    code = run_app(["predict", "--no-recover", *inputs, str(missing), "--boxes", str(dets_path),
                    "--weights", str(tiny_ckpt), "--json", str(results), "--coco", str(dataset),
                    "--out", str(out), "--device", "cpu", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 1, captured
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 4
    for bad, why in (("3.jpg", "corrupt"), ("4.jpg", "empty"), ("5.jpg", "not a readable image"),
                     ("6.jpg", "no such file")):
        assert sum(bad in line and why in line for line in skipped) == 1, skipped

    res = json.loads(results.read_text())
    assert {r["image_id"] for r in res} == {1} and {r["box_id"] for r in res} <= {0, 1}
    assert 1 in {r["box_id"] for r in res}  # the box partly outside the image gives poses
    assert all(np.isfinite(r["keypoints"]).all() for r in res)
    ds = json.loads(dataset.read_text())
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in ds["images"]] == [
        (1, "1.jpg", 500, 333), (2, "2.png", 320, 240)]
    assert {a["image_id"] for a in ds["annotations"]} == {1}
    for a in ds["annotations"]:  # boxes are clipped to the image
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 500 and y + h <= 333
    assert sorted(p.name for p in out.iterdir()) == ["1.jpg", "2.png"]
    assert cv2.imread(str(out / "2.png")).shape == (240, 320, 3)
    assert "failures" in captured.out and _leftovers(tmp_path) == []


def test_detector_boxes(realdata_dir, tiny_ckpt, tmp_path, capsys) -> None:
    torch.manual_seed(0)
    det = PersonDetector("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
                         weights_backbone=None, num_classes=2)
    with torch.no_grad():  # every proposal is a person with p = softmax([0, 3])[1] = 0.95
        det.model.roi_heads.box_predictor.cls_score.weight.zero_()
        det.model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 3.0]))
    det_path = tmp_path / "det.pt"
    det.save(det_path)
    folder = realdata_dir / "mmpose_tests" / "ochuman"
    photos = [folder / "003896.jpg", folder / "000817.jpg"]
    results = tmp_path / "r.json"
    code = run_app(["predict", "--no-recover", *map(str, photos), "--detector",
                    "fasterrcnn_mobilenet_v3_large_320_fpn", "--detector-weights", str(det_path),
                    "--det-thresh", "0.9", "--det-nms", "0", "--weights", str(tiny_ckpt),
                    "--json", str(results), "--device", "cpu", "--no-flip", "--instances", "1"])
    assert code == 0, capsys.readouterr()
    res = json.loads(results.read_text())
    assert {r["image_id"] for r in res} == {1, 2}  # ids follow the input order
    for r in res:
        assert r["score"] <= 0.96 and r["instance"] == 0 and 0 <= r["box_id"] < 100

    # Boxes from a file and from a detector at once are refused.
    code = run_app(["predict", str(photos[0]), "--boxes", str(results), "--detector-weights",
                    str(det_path), "--weights", str(tiny_ckpt)])
    assert code == 2 and "two box sources" in capsys.readouterr().err


def test_default_weights_notice_and_per_image_table(realdata_dir, tiny_ckpt, monkeypatch,
                                                    capsys) -> None:
    import mipnet_cli.annotate.images as annotate

    asked = []
    monkeypatch.setattr(annotate, "resolve_pose_weights",
                        lambda spec, min_instances=1: asked.append(spec) or tiny_ckpt)
    folder = realdata_dir / "mmpose_tests" / "ochuman"
    code = run_app(["predict", str(folder), "--gt", str(folder / "test_ochuman.json"),
                    "--device", "cpu", "--no-flip"])
    captured = capsys.readouterr()
    assert code == 0 and asked == [None]
    assert "movenet-thunder-coco" in captured.err and "COCO-trained" in captured.err
    for name in ("000817.jpg", "003799.jpg", "003896.jpg"):
        assert name in captured.out


def test_coco_dataset_labels_confident_joints_inside_the_image() -> None:
    k = np.zeros((17, 3))
    k[:, :2] = [[50 + i, 60 + 2 * i] for i in range(17)]
    k[:, 2] = 0.9
    k[3, 2] = 0.1  # not confident
    k[4, :2] = [-5, 70]  # outside the image
    k[5, 2] = -0.0
    primary = Pose(k.copy(), 0.8, box_id=7, instance=0, box_xywh=[40.0, 50.0, 100.0, 200.0])
    secondary = Pose(k.copy(), 0.3, box_id=7, instance=1, box_xywh=[40.0, 50.0, 100.0, 200.0])
    image = ImagePoses("a/x.jpg", 120, 90, 5, poses=[primary, secondary])
    empty = ImagePoses("b/x.jpg", 64, 48, 6)
    ds = coco_dataset([image, empty], COCO17, kpt_thresh=0.3)
    assert [im["file_name"] for im in ds["images"]] == ["a/x.jpg", "b/x.jpg"]  # names clash
    a0, a1 = ds["annotations"]
    kp = np.array(a0["keypoints"]).reshape(-1, 3)
    labelled = (k[:, 2] >= 0.3) & (k[:, 0] >= 0) & (k[:, 0] <= 120) & (k[:, 1] <= 90)
    assert (kp[:, 2] == np.where(labelled, 2, 0)).all() and (kp[~labelled, :2] == 0).all()
    assert a0["num_keypoints"] == labelled.sum() < 17
    assert a0["bbox"] == [40.0, 50.0, 80.0, 40.0]  # the box, clipped to the 120x90 image
    xy = k[labelled, :2]  # a secondary person is boxed by its own joints, not the box
    assert a1["bbox"] == pytest.approx([*xy.min(0), *(xy.max(0) - xy.min(0))])
    assert a1["area"] == pytest.approx(a1["bbox"][2] * a1["bbox"][3], abs=0.01)
    assert (a0["id"], a1["id"], a1["instance"], a1["box_id"]) == (1, 2, 1, 7)
    assert all(isinstance(v, int) for v in a0["keypoints"][2::3])
    res = pose_results([image, empty])
    assert [r["instance"] for r in res] == [0, 1] and "-0.0" not in json.dumps(res)
    assert unique_names(["p/a.jpg", "q/b.jpg"]) == ["a.jpg", "b.jpg"]


def test_writers_never_leave_half_files(tmp_path, monkeypatch) -> None:
    target = tmp_path / "d.json"
    target.write_text("previous")
    image = ImagePoses("x.jpg", 10, 10, 1, poses=[Pose(np.ones((17, 3)), 1.0, 0, 0)])

    def broken_dump(obj, f, **kwargs):
        f.write('{"images": [')
        raise OSError("disk full")

    monkeypatch.setattr("mipnet_cli.core.files.json.dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        write_coco_dataset(target, [image], COCO17)
    assert target.read_text() == "previous" and _leftovers(tmp_path) == []
    monkeypatch.undo()
    write_coco_dataset(target, [image], COCO17)
    assert json.loads(target.read_text())["annotations"][0]["box_id"] == 0
    assert _leftovers(tmp_path) == []


def test_joint_threshold_defaults_to_the_models_own(realdata_dir, tmp_path, capsys) -> None:
    """Without --kpt-thresh the checkpoint's threshold labels the --coco joints; the option
    overrides it."""
    folder = realdata_dir / "mmpose_tests" / "coco"
    photo = sorted(folder.glob("*.jpg"))[0]

    def labelled(kpt_thresh: float, *extra: str) -> int:
        torch.manual_seed(0)
        model = build_model("hrnet_w8_tiny", num_instances=1)
        model.config = replace(model.config, kpt_thresh=kpt_thresh)
        ckpt, out = tmp_path / f"m{kpt_thresh}.safetensors", tmp_path / f"d{kpt_thresh}.json"
        save_checkpoint(ckpt, model)
        assert run_app(["predict", str(photo), "--gt", str(folder / "test_coco.json"),
                        "--weights", str(ckpt), "--coco", str(out), "--device", "cpu",
                        *extra]) == 0, capsys.readouterr()
        return sum(a["num_keypoints"] for a in _gt(out)["annotations"])

    assert labelled(1.01) == 0  # no random-network joint reaches a confidence above 1
    assert labelled(0.0) > 0
    assert labelled(1.01, "--kpt-thresh", "0") == labelled(0.0)
