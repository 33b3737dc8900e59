"""Person detector (random and local weights, offline errors) and box-file / GT-box loaders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision

from mipnet_cli.core.errors import MipnetError
from mipnet_cli.detect.base import DetectorBase, check_sizes
from mipnet_cli.detect.boxes import image_ids_by_filename, load_box_file, load_gt_boxes
from mipnet_cli.detect.torchvision_detectors import PersonDetector
from mipnet_cli.detect.yolox import YoloxPersonDetector
from mipnet_cli.media.images import read_image

SMALL = "fasterrcnn_mobilenet_v3_large_320_fpn"


def _scene(seed: int = 0) -> np.ndarray:
    """A 240x320 RGB scene: noise with a few bright upright rectangles."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, (240, 320, 3), dtype=np.uint8)
    for x in (40, 150, 250):
        img[60:200, x:x + 40] = rng.integers(120, 255, 3, dtype=np.uint8)
    return img


def _small_detector(class_bias: list[float], **kwargs) -> PersonDetector:
    """A random 3-class detector whose classifier gives every box the same class scores."""
    torch.manual_seed(0)
    det = PersonDetector(SMALL, weights=None, num_classes=3, **kwargs)
    cls = det.model.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        cls.weight.zero_()
        cls.bias.copy_(torch.tensor(class_bias))
    return det


def test_detector_keeps_only_persons_above_threshold() -> None:
    # softmax([0, 2, 0]) = (0.107, 0.787, 0.107): every proposal is mostly "person".
    person_p = float(torch.softmax(torch.tensor([0.0, 2.0, 0.0]), 0)[1])
    det = _small_detector([0.0, 2.0, 0.0], score_thresh=0.5, max_detections=7, batch_size=2)
    results = det.detect([_scene(0), _scene(1), np.zeros((0, 0, 3), np.uint8)])
    assert len(results) == 3 and results[2] == []
    for boxes in results[:2]:
        assert 0 < len(boxes) <= 7
        assert [b.id for b in boxes] == list(range(len(boxes)))
        for b in boxes:
            assert b.source == "detector" and b.xyxy.shape == (4,)
            assert b.score == pytest.approx(person_p, abs=1e-4)
            assert 0 <= b.xyxy[0] <= b.xyxy[2] <= 320 and 0 <= b.xyxy[1] <= b.xyxy[3] <= 240

    # Now class 2 (not a person) wins every box: its boxes (0.787) must never come back,
    # only the weaker person boxes (0.107), and none at all above 0.5.
    other_p = float(torch.softmax(torch.tensor([0.0, 0.0, 2.0]), 0)[1])
    low = _small_detector([0.0, 0.0, 2.0], score_thresh=0.05)
    boxes = low.detect([_scene(0)])[0]
    assert boxes and all(b.score == pytest.approx(other_p, abs=1e-4) for b in boxes)
    assert _small_detector([0.0, 0.0, 2.0], score_thresh=0.5).detect([_scene(0)]) == [[]]


def test_detector_nms_iou_is_applied() -> None:
    loose = _small_detector([0.0, 2.0, 0.0], score_thresh=0.5, nms_iou=0.9).detect([_scene()])[0]
    tight = _small_detector([0.0, 2.0, 0.0], score_thresh=0.5, nms_iou=0.1).detect([_scene()])[0]
    assert len(tight) < len(loose)
    xyxy = torch.tensor(np.stack([b.xyxy for b in tight]))
    iou = torchvision.ops.box_iou(xyxy, xyxy).fill_diagonal_(0)
    assert float(iou.max()) <= 0.1 + 1e-6


def test_detector_weights_round_trip(tmp_path: Path) -> None:
    det = _small_detector([0.0, 2.0, 0.0], score_thresh=0.3)
    img = _scene(2)
    want = det.detect([img])[0]
    path = tmp_path / "person_det.pt"
    det.save(path)
    again = PersonDetector(SMALL, weights_path=path, score_thresh=0.3)
    assert again.num_classes == 3
    got = again.detect([img])[0]
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(np.stack([b.xyxy for b in got]), np.stack([b.xyxy for b in want]),
                               atol=1e-3)
    # A bare state dict (class count read off the classifier) and a {"state_dict": ...} file.
    bare = tmp_path / "bare.pth"
    torch.save(det.model.state_dict(), bare)
    assert PersonDetector(SMALL, weights_path=bare).num_classes == 3
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": det.model.state_dict(), "epoch": 3}, wrapped)
    assert len(PersonDetector(SMALL, weights_path=wrapped, score_thresh=0.3).detect([img])[0]) \
        == len(want)


def test_detector_weights_mismatch_and_bad_files(tmp_path: Path) -> None:
    det = _small_detector([0.0, 2.0, 0.0])
    path = tmp_path / "det.pt"
    det.save(path)
    with pytest.raises(MipnetError, match="saved from detector"):
        PersonDetector("fasterrcnn_mobilenet_v3_large_fpn", weights_path=path)
    state = det.model.state_dict()
    state.pop("roi_heads.box_predictor.bbox_pred.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(MipnetError) as info:
        PersonDetector(SMALL, weights_path=tmp_path / "broken.pt")
    msg = str(info.value)
    assert "1 missing: roi_heads.box_predictor.bbox_pred.bias" in msg
    assert "1 unexpected: extra.weight" in msg
    with pytest.raises(MipnetError, match="wrong shape"):
        PersonDetector(SMALL, weights_path=path, num_classes=5)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(MipnetError, match="junk.pt: cannot read as a PyTorch checkpoint"):
        PersonDetector(SMALL, weights_path=tmp_path / "junk.pt")
    with pytest.raises(MipnetError, match="nothere.pt: detector weights file not found"):
        PersonDetector(SMALL, weights_path=tmp_path / "nothere.pt")
    with pytest.raises(MipnetError, match="unknown detector"):
        PersonDetector("yolo_v99", weights=None)
    with pytest.raises(MipnetError, match="unknown weights"):
        PersonDetector(SMALL, weights="IMAGENET_V9")


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty torch hub cache and no network."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def offline(url, dst, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def test_offline_default_weights_error(empty_hub: Path) -> None:
    url = torchvision.models.get_model_weights(SMALL).DEFAULT.url
    with pytest.raises(MipnetError) as info:
        PersonDetector(SMALL)
    msg = str(info.value)
    assert url in msg and str(empty_hub) in msg and "--detector-weights" in msg
    assert "name resolution" in msg and "\n" not in msg
    assert not any(empty_hub.glob("*"))  # nothing half-written left in the cache


def test_default_weights_load_from_cache_without_network(empty_hub: Path) -> None:
    url = torchvision.models.get_model_weights(SMALL).DEFAULT.url
    torch.manual_seed(1)
    source = torchvision.models.get_model(SMALL, weights=None, weights_backbone=None)
    # Pretrained builds use frozen BatchNorm, whose state has no batch counters.
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    empty_hub.mkdir(parents=True)
    torch.save(state, empty_hub / os.path.basename(url))
    det = PersonDetector(SMALL)
    assert det.num_classes == 91
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(det.model.state_dict()[key], state[key])


def test_box_file(realdata_dir: Path, tmp_path: Path) -> None:
    path = realdata_dir / "mmpose_tests/coco/test_coco_det_AP_H_56.json"
    raw = json.loads(path.read_text())
    assert len(raw) == 118
    boxes = load_box_file(path)
    assert sum(len(v) for v in boxes.values()) == 118
    assert set(boxes) == {785, 40083, 196141, 197388}
    for image_boxes in boxes.values():
        scores = [b.score for b in image_boxes]
        assert scores == sorted(scores, reverse=True)
    first = boxes[785][0]
    x, y, w, h = raw[0]["bbox"]
    np.testing.assert_allclose(first.xyxy, [x, y, x + w, y + h])
    assert first.source == "file" and first.id == 0 and first.xywh == pytest.approx(raw[0]["bbox"])
    strong = load_box_file(path, score_thresh=0.5)
    assert sum(len(v) for v in strong.values()) == sum(d["score"] >= 0.5 for d in raw)
    # Non-person entries are dropped.
    mixed = [*raw[:3], {**raw[3], "category_id": 3}]
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    assert sum(len(v) for v in load_box_file(tmp_path / "mixed.json").values()) == 3


def test_box_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 1}]))
    with pytest.raises(MipnetError, match="bad.json: detection 0 is malformed"):
        load_box_file(bad)
    (tmp_path / "dict.json").write_text("{}")
    with pytest.raises(MipnetError, match="expected a JSON list"):
        load_box_file(tmp_path / "dict.json")
    (tmp_path / "cut.json").write_text('[{"image_id": 1')
    with pytest.raises(MipnetError, match="cut.json: not valid JSON"):
        load_box_file(tmp_path / "cut.json")
    with pytest.raises(MipnetError, match="none.json: box file not found"):
        load_box_file(tmp_path / "none.json")


def test_gt_boxes(realdata_dir: Path, tmp_path: Path) -> None:
    ann_path = realdata_dir / "mmpose_tests/coco/test_coco.json"
    data = json.loads(ann_path.read_text())
    gt = load_gt_boxes(ann_path)
    assert set(gt) == {785, 40083, 196141, 197388}
    assert sum(len(v) for v in gt.values()) == 14  # all 14 people are non-crowd persons
    assert len(gt[785]) == 1 and gt[785][0].id == 442619 and gt[785][0].source == "gt"
    with_kpts = load_gt_boxes(ann_path, require_keypoints=True)
    assert sum(len(v) for v in with_kpts.values()) == 12
    ann = next(a for a in data["annotations"] if a["id"] == 442619)
    np.testing.assert_allclose(gt[785][0].xywh, ann["bbox"], atol=1e-6)
    ids = image_ids_by_filename(ann_path)
    assert ids["000000000785.jpg"] == 785 and len(ids) == 4
    # Crowd regions are skipped; boxes are clipped to the image.
    data["annotations"][0]["iscrowd"] = 1
    data["annotations"][1]["bbox"] = [-10.0, -5.0, 5000.0, 40.0]
    (tmp_path / "edited.json").write_text(json.dumps(data))
    edited = load_gt_boxes(tmp_path / "edited.json")
    assert sum(len(v) for v in edited.values()) == 13
    clipped = next(b for b in edited[40083] if b.id == data["annotations"][1]["id"])
    np.testing.assert_allclose(clipped.xyxy, [0, 0, 500, 35])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(MipnetError, match="not a COCO annotation file"):
        load_gt_boxes(tmp_path / "list.json")


class _FixedCandidates(DetectorBase):
    """A detector whose boxes at each input size are given: for the merge of several sizes."""

    def __init__(self, by_size: dict, **kwargs) -> None:
        super().__init__("fixed", 0.5, 0.5, kwargs.pop("max_detections", 100), 4, "cpu",
                         sizes=list(by_size), **kwargs)
        self.by_size = by_size
        self.seen: list[int | None] = []

    def _candidates(self, images, size):
        self.seen.append(size)
        xyxy, scores = self.by_size[size]
        return [(torch.tensor(xyxy, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64))
                for _ in images]


def test_several_input_sizes_are_merged_by_one_nms() -> None:
    a, a_shifted, far = [0, 0, 100, 200], [5, 0, 105, 200], [300, 0, 340, 80]  # IoU(a, a') 0.9
    det = _FixedCandidates({416: ([a], [0.9]), 832: ([a_shifted, far], [0.7, 0.6])})
    boxes = det.detect([_scene(0), _scene(1)])
    assert det.seen == [416, 832]  # one pass per size for the batch
    for found in boxes:  # a' is the same person as a, at a lower score: suppressed
        assert [b.xyxy.tolist() for b in found] == [a, far]
        assert [b.score for b in found] == pytest.approx([0.9, 0.6])
        assert [b.id for b in found] == [0, 1]
    capped = _FixedCandidates({416: ([a], [0.9]), 832: ([far], [0.95])}, max_detections=1)
    assert [b.xyxy.tolist() for b in capped.detect([_scene(0)])[0]] == [far]
    # One size: the family's boxes, best first, no second NMS.
    single = _FixedCandidates({416: ([far, a, a_shifted], [0.2, 0.9, 0.7])})
    assert [b.score for b in single.detect([_scene(0)])[0]] == pytest.approx([0.9, 0.7, 0.2])


def test_input_sizes_are_checked() -> None:
    assert check_sizes(None) is None
    assert check_sizes([416, 832, 416]) == (416, 832)
    for bad in ([400], [32], [4128], []):
        with pytest.raises(ValueError):
            check_sizes(bad)


def test_torchvision_detector_runs_at_the_asked_shorter_side() -> None:
    det = _small_detector([0.0, 2.0, 0.0], score_thresh=0.5, sizes=[160, 320])
    seen = []
    det.model.transform.register_forward_hook(
        lambda module, args, out: seen.append(tuple(out[0].tensors.shape[-2:])))
    det.detect([_scene(0)])
    own = det._own_sizes
    det.sizes = None
    det.detect([_scene(0)])
    assert det.model.transform.min_size == own[0]  # the builder's own size is back
    # 240x320 scene, shorter side to 160 then 320 (padded to multiples of 32), then 320 (own).
    assert seen == [(160, 224), (320, 448), (320, 448)]


def test_yolox_detector_at_a_larger_size_finds_the_same_person() -> None:
    root = Path(__file__).resolve().parents[1]
    path = root / "weights" / "yolox_nano_coco.safetensors"
    image = read_image(root / "samples" / "images" / "000000.jpg")
    own = YoloxPersonDetector.from_file(path, score_thresh=0.3).detect([image])[0]
    both = YoloxPersonDetector.from_file(path, score_thresh=0.3, sizes=[416, 640]).detect(
        [image])[0]
    assert own and len(both) >= len(own)
    iou = torchvision.ops.box_iou(torch.tensor(np.stack([b.xyxy for b in own])),
                                  torch.tensor(np.stack([b.xyxy for b in both])))
    assert bool((iou.max(1).values > 0.7).all())  # every box of the own size is kept or matched
