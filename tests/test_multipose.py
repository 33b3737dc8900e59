"""MoveNet MultiPose, the detector-free family: the converted network against the published
TF.js graph (evaluated op by op in NumPy), our decoding against the graph's own 1x6x56 output,
no cap of six people, the flip test, the engine and the CLI options, and crowd recovery."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tfjs_reference import run_graph

from mipnet_cli.checkpoints.convert import convert_file
from mipnet_cli.checkpoints.convert.movenet import movenet_from_tfjs
from mipnet_cli.checkpoints.convert.tfjs import read_tfjs
from mipnet_cli.checkpoints.format import load_checkpoint
from mipnet_cli.cli import run_app
from mipnet_cli.core.keypoints import COCO17
from mipnet_cli.core.results import Pose, whole_image_boxes
from mipnet_cli.media.images import read_image
from mipnet_cli.models import build_model
from mipnet_cli.models.decode import flip_permutation
from mipnet_cli.models.movenet_multipose import CHANNELS, MoveNetMultiPose, decode_multipose
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator
from mipnet_cli.pose.merge import recover_poses

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "movenet_multipose_coco.safetensors"
P = "StatefulPartitionedCall/"
HEAD_NODES = {"center": P + "Sigmoid", "kpt_regress": P + "kpt_regress_0/conv2d_8/BiasAdd",
              "kpt_heatmap": P + "Sigmoid_1", "kpt_offset": P + "kpt_offset_0/conv2d_9/BiasAdd",
              "box_scale": P + "box_scale_0/conv2d_5/BiasAdd",
              "box_offset": P + "box_offset_0/conv2d_6/BiasAdd"}


@pytest.fixture(scope="module")
def graph(weights_src: Path):
    return read_tfjs(weights_src / "movenet" / "movenet-multipose.json")


@pytest.fixture(scope="module")
def converted(weights_src: Path) -> MoveNetMultiPose:
    return movenet_from_tfjs(weights_src / "movenet" / "movenet-multipose.json")


def _input(realdata_dir: Path, name: str, size: tuple[int, int]) -> np.ndarray:
    rgb = read_image(realdata_dir / "photos" / name)
    return cv2.resize(rgb, (size[1], size[0])).astype(np.int32)[None]


@pytest.mark.parametrize("name,size", [("basketball1.png", (256, 256)),
                                       ("kite.jpg", (384, 384)),
                                       ("messi5.jpg", (256, 320))])
def test_multipose_equals_the_tfjs_graph(graph, converted, realdata_dir: Path, name: str,
                                         size: tuple[int, int]) -> None:
    x = _input(realdata_dir, name, size)
    ref = run_graph(graph, x, (*HEAD_NODES.values(), "Identity"))
    with torch.no_grad():
        feats = converted.trunk(torch.from_numpy(x).permute(0, 3, 1, 2).float())
        maps = converted.head_maps(feats, None)
        dense = converted.tail(feats, None)
    for head, node in HEAD_NODES.items():
        theirs = np.transpose(ref[node], (0, 3, 1, 2))
        # 1e-4 of the head's range: the regressions span tens of cells, and float32 keeps
        # about seven digits of them
        tol = 1e-4 * max(1.0, float(np.abs(theirs).max()) / 10)
        assert np.abs(maps[head].numpy() - theirs).max() < tol, head
    # Our decoding, capped at six people as published, is the graph's own output.
    out = ref["Identity"][0]  # (6, 56): 17 x (y, x, score), box, score
    dec = decode_multipose(dense, 6)
    people = out[:, 55] > 0  # slots the graph fills with nobody score 0
    assert people.sum() >= 1
    kps = dec["keypoints"][0].numpy().reshape(6, 51)
    assert np.abs(kps[people] - out[people, :51]).max() < 1e-4
    assert np.abs(dec["boxes"][0].numpy()[people] - out[people, 51:55]).max() < 1e-4
    assert np.abs(dec["scores"][0].numpy() - out[:, 55]).max() < 1e-4


def test_no_cap_of_six_people(converted, realdata_dir: Path) -> None:
    """More than six people are decoded when more stand there, and the first six are the
    published six."""
    x = torch.from_numpy(_input(realdata_dir, "kite.jpg", (512, 512))).permute(0, 3, 1, 2)
    with torch.no_grad():
        dense = converted.tail(converted.trunk(x.float()), None)
    six, twenty = decode_multipose(dense, 6), decode_multipose(dense, 20)
    assert (twenty["centre_scores"][0] > 0.1).sum() > 6
    assert torch.equal(twenty["centre_scores"][0, :6], six["centre_scores"][0])
    assert torch.allclose(twenty["boxes"][0, :6], six["boxes"][0])


def test_shipped_weights_are_the_converted_source(weights_src: Path, tmp_path: Path,
                                                  converted) -> None:
    out = tmp_path / "multipose.safetensors"
    done = convert_file(weights_src / "movenet" / "movenet-multipose.json", out, half=True)
    assert done.arch == "movenet_multipose" and done.provenance["licence"] == "Apache-2.0"
    shipped, meta = load_checkpoint(SHIPPED)
    assert meta.provenance["source_sha256"] == done.provenance["source_sha256"]
    assert isinstance(shipped, MoveNetMultiPose) and shipped.whole_image
    for (k, a), (_, b) in zip(converted.state_dict().items(), shipped.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k  # float16 storage is exact: the published weights are


def test_flip_merge_mirrors_every_head() -> None:
    """Mirroring the maps twice gives them back, and a mirrored person decodes at the mirrored
    place with the left and right joints swapped."""
    model = build_model("movenet_multipose", image_size=(64, 64)).eval()
    h = w = 16
    maps = torch.zeros(1, 1, 90, h, w)
    cy, cx = 5, 3
    maps[0, 0, CHANNELS["center"], cy, cx] = 0.9
    maps[0, 0, CHANNELS["box_scale"], cy, cx] = torch.tensor([8.0, 14.0])
    maps[0, 0, CHANNELS["box_offset"], cy, cx] = torch.tensor([0.5, 0.5])
    regress = maps[0, 0, CHANNELS["kpt_regress"]].view(17, 2, h, w)
    offset = maps[0, 0, CHANNELS["kpt_offset"]].view(17, 2, h, w)
    heat = maps[0, 0, CHANNELS["kpt_heatmap"]]
    for j in range(17):
        jy, jx = 2 + j % 8, 1 + j % 3 + (j in (5, 7, 9))  # left joints one cell further
        regress[j, :, cy, cx] = torch.tensor([jy + 0.5 - cy, jx + 0.25 - cx])
        heat[j, jy, jx] = 0.8
        offset[j, :, jy, jx] = torch.tensor([0.5, 0.25])

    def mirror(m: torch.Tensor) -> torch.Tensor:
        return 2 * model.flip_merge(torch.zeros_like(m), m, COCO17.flip_pairs)

    assert torch.allclose(mirror(mirror(maps)), maps)
    a = decode_multipose(maps[:, 0], 1)["keypoints"][0, 0]
    b = decode_multipose(mirror(maps)[:, 0], 1)["keypoints"][0, 0]
    perm = flip_permutation(17, COCO17.flip_pairs)
    assert torch.allclose(b[perm, 0], a[:, 0]) and torch.allclose(b[perm, 1], 1 - a[:, 1])


def test_engine_whole_image_options(realdata_dir: Path) -> None:
    image = read_image(realdata_dir / "photos" / "kite.jpg")
    small = PoseEstimator.from_checkpoint(
        SHIPPED, EngineOptions(flip_test=False, input_size=256, max_people=6), "cpu")
    large = PoseEstimator.from_checkpoint(
        SHIPPED, EngineOptions(flip_test=False, input_size=512), "cpu")
    assert small.input_size == (256, 256) and large.input_size == (512, 512)
    assert PoseEstimator.from_checkpoint(SHIPPED).input_size == (384, 384)  # the default
    few = small.predict([image], whole_image_boxes([image]))[0]
    many = large.predict([image], whole_image_boxes([image]))[0]
    assert len(few) <= 6 < len(many)  # kite.jpg: a beach with about ten small people
    assert all(p.box_id == 0 and p.score > 0 and p.keypoints.shape == (17, 3) for p in many)
    for p in many:  # each person's own box, from the network's box heads
        x, y, w, h = p.box_xywh
        inside = ((p.keypoints[:, 0] >= x - 0.1 * w) & (p.keypoints[:, 0] <= x + 1.1 * w)
                  & (p.keypoints[:, 1] >= y - 0.1 * h) & (p.keypoints[:, 1] <= y + 1.1 * h))
        assert w > 0 and h > 0 and inside[p.keypoints[:, 2] > 0.3].all()
    h, w = image.shape[:2]
    xy = np.stack([p.keypoints[:, :2] for p in many])
    assert xy[..., 0].min() > -0.05 * w and xy[..., 0].max() < 1.05 * w
    assert xy[..., 1].min() > -0.05 * h and xy[..., 1].max() < 1.05 * h
    with pytest.raises(ValueError, match="multiple of 32"):
        PoseEstimator.from_checkpoint(SHIPPED, EngineOptions(input_size=300), "cpu")
    with pytest.raises(ValueError, match="whole-image networks"):
        PoseEstimator.from_checkpoint(ROOT / "weights" / "movenet_lightning_coco.safetensors",
                                      EngineOptions(input_size=256), "cpu")


def _pose(x: float, score: float) -> Pose:
    kps = np.zeros((17, 3), np.float32)
    kps[:, 0], kps[:, 1], kps[:, 2] = x + np.arange(17), 50 + 5 * np.arange(17), 0.9
    return Pose(kps, score, box_id=3, instance=0, area=100 * 100)


def test_recover_poses_keeps_only_the_people_top_down_missed() -> None:
    own = [_pose(10, 0.9)]
    extra = [_pose(10.5, 0.8), _pose(300, 0.6)]  # the same person, and someone without a box
    merged = recover_poses(own, extra, 0.5, 0.7, COCO17.sigmas_array)
    assert [p.recovered for p in merged] == [False, True]
    assert merged[0] is own[0]
    assert merged[1].box_id == -1 and merged[1].score == pytest.approx(0.3)
    assert recover_poses(own, [], 0.5, 0.7, COCO17.sigmas_array) == own


def test_predict_recover_brings_back_people_without_boxes(realdata_dir: Path,
                                                          tmp_path: Path) -> None:
    """One ground-truth box on a photo of two players: top-down finds one pose, --recover the
    other, marked `recovered` in the results."""
    photo = realdata_dir / "photos" / "basketball1.png"
    image = read_image(photo)
    ann = {"images": [{"id": 1, "file_name": photo.name, "width": image.shape[1],
                       "height": image.shape[0]}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [0, 0, image.shape[1] / 2, image.shape[0]],
                            "area": image.shape[0] * image.shape[1] / 2,
                            "keypoints": [0] * 51, "num_keypoints": 0}],
           "categories": [COCO17.coco_category()]}
    gt = tmp_path / "one_box.json"
    gt.write_text(json.dumps(ann))
    runs = {}
    for flag in ("--no-recover", "--recover"):
        out = tmp_path / f"{flag}.json"
        code = run_app(["predict", str(photo), "--gt", str(gt), "--json", str(out),
                        "--device", "cpu", "--no-flip", flag])
        assert code == 0
        runs[flag] = json.loads(out.read_text())
    assert len(runs["--no-recover"]) == 1 and not any("recovered" in r
                                                      for r in runs["--no-recover"])
    recovered = [r for r in runs["--recover"] if r.get("recovered")]
    assert len(recovered) >= 1 and all(r["box_id"] == -1 for r in recovered)
    right = [r for r in recovered if np.mean(r["keypoints"][0::3]) > image.shape[1] / 2]
    assert right, "the player on the right, who has no box, comes back"


def test_oks_filter_keeps_bad_first_stage_poses_out_of_the_refinement() -> None:
    from mipnet_cli.models.movenet_multipose import PoseHeads
    from mipnet_cli.train.multipose import head_loss

    torch.manual_seed(0)
    heads = PoseHeads(17, refine=True, psm=True)
    torch.nn.init.normal_(heads.refine[-1].weight, std=0.1)
    n, width = 4, 17 * 27 + 3
    gt = torch.cat([torch.rand(n, 17, 2) * 100, torch.ones(n, 17, 1)], -1)
    batch = {"inputs": torch.randn(n, width), "joints": gt[..., :2] + 3.0, "gt": gt,
             "area": torch.full((n,), 900.0), "first_oks": torch.tensor([0.9, 0.1, 0.8, 0.2])}
    loss, terms = head_loss(heads, batch, 0.3, 384, 96)
    loss.backward()
    grads = torch.autograd.grad(
        head_loss(heads, {k: v[[1, 3]] for k, v in batch.items()}, 0.3, 384, 96)[0],
        heads.refine[-1].weight, allow_unused=True)[0]
    assert terms["refine"] > 0 and terms["psm"] > 0
    assert grads is None or torch.count_nonzero(grads) == 0  # only filtered-out poses


def test_training_the_cascade_writes_a_model_that_predicts(tmp_path: Path) -> None:
    from mipnet_cli.train.multipose import MultiPoseTrainConfig, MultiPoseTrainer

    samples = ROOT / "samples"
    config = MultiPoseTrainConfig.load(None, [
        f'train_ann="{samples / "annotations.json"}"', f'train_images="{samples / "images"}"',
        f'val_ann="{samples / "annotations.json"}"', f'val_images="{samples / "images"}"',
        f'init="{SHIPPED}"', "input_size=128", "epochs=2", "val_every=2", "mirror=false",
        f'out_dir="{tmp_path / "run"}"'])
    history = MultiPoseTrainer(config).fit()
    assert [r["epoch"] for r in history] == [1, 2] and "val" in history[-1]
    assert (tmp_path / "run" / "cache_train.pt").is_file()
    model, meta = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert isinstance(model, MoveNetMultiPose) and model.pose_heads is not None
    assert meta.config.feature_align and meta.config.quality_score
    est = PoseEstimator(model, "coco", EngineOptions(flip_test=False), "cpu")
    image = read_image(samples / "images" / "000000.jpg")
    poses = est.predict([image], whole_image_boxes([image]))[0]
    assert poses and all(p.psm is not None and 0 <= p.psm <= 1 for p in poses)
    again = MultiPoseTrainer(config)  # a rerun reuses the cached people
    assert torch.equal(again.cached()["inputs"], MultiPoseTrainer(config).cached()["inputs"])
