"""The single-stage family (pose regression with OKS-Filter and PSM): network, targets, loss,
decoding, engine integration, PSM scoring of other poses, training and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchvision.ops import deform_conv2d

from mipnet_cli.checkpoints.format import load_checkpoint, save_checkpoint
from mipnet_cli.cli import run_app
from mipnet_cli.core.errors import MipnetError
from mipnet_cli.core.keypoints import COCO17
from mipnet_cli.core.oks import soft_nms
from mipnet_cli.core.results import whole_image_boxes
from mipnet_cli.detect.sources import WholeImage, box_source
from mipnet_cli.media.writers import pose_result
from mipnet_cli.models import build_model
from mipnet_cli.models.pfs import STRIDES, level_of, mirror_index
from mipnet_cli.models.pfs_loss import LossSettings, assign, oks_matrix, pfs_loss
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator
from mipnet_cli.pose.merge import merge_instances
from mipnet_cli.pose.psm import PsmScorer
from mipnet_cli.train.pfs import PfsTrainConfig, PfsTrainer

SIZE = 128


def tiny(**overrides):
    torch.manual_seed(0)
    return build_model("pfs_yolox_nano", image_size=(SIZE, SIZE), **overrides).eval()


@pytest.mark.parametrize("joints", [17, 14])
def test_feature_alignment_is_a_deformable_convolution(joints):
    """`_align` equals torchvision's deform_conv2d with kernel point j moved onto keypoint j
    (an extra centre point for even K)."""
    model = tiny(num_joints=joints)
    feat = torch.randn(2, 64, 6, 7)
    offsets = torch.randn(2, joints, 2, 6, 7) * 20
    points = model.points
    assert points == joints + 1 - joints % 2
    base = torch.arange(points).float() - points // 2
    dy = torch.zeros(2, points, 6, 7)
    dx = -base.view(1, points, 1, 1).expand(2, points, 6, 7).clone()
    dy[:, :joints] = offsets[:, :, 1] / 16
    dx[:, :joints] += offsets[:, :, 0] / 16
    ref = deform_conv2d(feat, torch.stack([dy, dx], 2).reshape(2, 2 * points, 6, 7),
                        model.align_weight, model.align_bias, padding=(0, points // 2))
    torch.testing.assert_close(model._align(feat, offsets, 16), ref, atol=1e-4, rtol=1e-4)


def test_dense_outputs_and_flip_merge_mirror_twice_is_identity():
    model = tiny()
    x = torch.rand(1, 3, SIZE, SIZE) * 255
    with torch.no_grad():
        out = model.forward_multi(x)
    cells = sum(math.ceil(SIZE / s) ** 2 for s in STRIDES)
    assert out.shape == (1, 1, cells, 2 * 17 + 2)
    sizes = tuple((math.ceil(SIZE / s),) * 2 for s in STRIDES)
    assert torch.equal(mirror_index(sizes)[mirror_index(sizes)], torch.arange(cells))
    pairs = COCO17.flip_pairs

    def mirror(o: torch.Tensor) -> torch.Tensor:
        return 2 * model.flip_merge(torch.zeros_like(o), o, pairs)

    torch.testing.assert_close(mirror(mirror(out)), out)
    merged = model.flip_merge(out, mirror(out), pairs)
    torch.testing.assert_close(merged, out)  # a pose and its own mirror image agree


def test_soft_nms_decays_overlaps_and_keeps_distant_boxes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    keep, scores = soft_nms(boxes, np.array([0.9, 0.8, 0.7]), min_score=0.01, sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.8 * np.exp(-2)], rtol=1e-6)
    keep, _ = soft_nms(boxes, np.array([0.9, 0.8, 0.7]), min_score=0.2)
    assert keep.tolist() == [0, 2]


def _person(cx: float, cy: float, half: float) -> np.ndarray:
    """A 17-joint pose spread over a square of side 2·half around (cx, cy), all labelled."""
    rng = np.random.default_rng(int(cx * 7 + cy))
    xy = rng.uniform(-half, half, (17, 2))
    xy[0], xy[1] = (-half, -half), (half, half)
    return np.concatenate([xy + (cx, cy), np.ones((17, 1))], 1).astype(np.float32)


def _batch(people: list[np.ndarray]):
    k = torch.as_tensor(np.stack(people))[None]
    boxes = torch.cat([k[..., :2].amin(2) - 4, k[..., :2].amax(2) + 4], -1)
    areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return k, boxes, areas


def test_assignment_levels_centre_sampling_and_smallest_person_wins():
    model = tiny()
    x = torch.rand(1, 3, SIZE, SIZE) * 255
    big, small = _person(64, 64, 40), _person(64, 64, 12)  # pseudo boxes 80 and 24 px
    people, boxes, _ = _batch([big, small])
    with torch.no_grad():
        out = model.dense(model.trunk(x))
    centre = assign(out, people[0], boxes[0], 2, LossSettings(center_sampling=True))
    everywhere = assign(out, people[0], boxes[0], 2, LossSettings(center_sampling=False))
    assert level_of(80) == 1 and level_of(24) == 0
    for owner in (centre, everywhere):
        assert set(out.strides[owner == 0].tolist()) == {float(STRIDES[1])}
        assert set(out.strides[owner == 1].tolist()) == {float(STRIDES[0])}
    assert (everywhere >= 0).sum() > (centre >= 0).sum() > 0
    near = (out.locations[centre == 0] - 64).abs().max()
    assert near <= 1.5 * STRIDES[1]


def test_loss_terms_oks_filter_and_a_few_steps_fit_one_image():
    torch.manual_seed(0)
    model = build_model("pfs_yolox_nano", image_size=(SIZE, SIZE)).train()
    x = torch.rand(1, 3, SIZE, SIZE) * 255
    people, boxes, areas = _batch([_person(40, 60, 30), _person(90, 70, 25)])
    sigmas = torch.as_tensor(COCO17.sigmas_array, dtype=torch.float32)
    settings = LossSettings()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, terms = pfs_loss(model.train_outputs(x), people, boxes, areas, [2], sigmas,
                                      settings)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(terms) == {"cls", "reg", "refine", "quality", "heatmap", "positives"}
    assert losses[-1] < 0.7 * losses[0], losses
    # OKS of a pose with itself is 1, with a far pose ~0: the OKS-Filter's measure.
    oks = oks_matrix(people[0, :, :, :2], people[0], areas[0], sigmas)
    torch.testing.assert_close(oks.diagonal(), torch.ones(2))
    assert oks[0, 1] < 0.05


def test_decode_maps_letterboxed_poses_back_and_engine_scores_them_itself():
    """A whole-image network's candidates keep their own scores and areas; no box is given
    to the poses (their box is their keypoints' extent)."""
    model = tiny(score_thresh=0.01, max_people=5)
    est = PoseEstimator(model, "coco", EngineOptions(flip_test=False), "cpu")
    image = np.zeros((100, 200, 3), np.uint8)  # letterboxed: 200 px -> 128, 1.6 px per pixel
    with torch.no_grad():
        out = est.infer(est.crops([image], *est.boxes_to_center_scale(np.array([[0, 0, 200,
                                                                                  100]])),
                                  np.array([0])))
    k = 17
    out[:] = -20.0  # every location: no person
    people = {5: (30.0, 64.0), 9: (100.0, 64.0)}  # location -> pose centre, input pixels
    quality = {5: 2.0, 9: 0.0}  # PSM logits: predicted OKS 0.88 and 0.5
    for loc, (cx, cy) in people.items():
        xy = torch.as_tensor(_person(cx, cy, 10)[:, :2])
        out[0, 0, loc, :2 * k] = xy.flatten()
        out[0, 0, loc, 2 * k] = 5.0  # cls logit
        out[0, 0, loc, 2 * k + 1] = quality[loc]
    cands = est.candidates(out, *est.boxes_to_center_scale(np.array([[0, 0, 200, 100]])))
    assert (cands.scores[0] > 0).sum() == 2
    kept = cands.keypoints[0, :2]
    centres = sorted(kept[:, :, 0].mean(1))
    # input x = (image x) * 128 / 200; the letterbox centres the 100 px high image
    expected = sorted((_person(cx, cy, 10)[:, 0].mean() * 200 / 128 - 0.5 * (200 / 128 - 1))
                      for cx, cy in people.values())
    np.testing.assert_allclose(centres, expected, atol=1.0)
    assert (cands.areas[0, :2] > 0).all() and (cands.instances == 0).all()
    left = int(np.argmin(kept[:, :, 0].mean(1)))  # the person of location 5
    np.testing.assert_allclose(cands.psm[0, [left, 1 - left]], torch.tensor([2.0, 0.0]).sigmoid(),
                               rtol=1e-5)
    poses = est.merge(cands, whole_image_boxes([image])[0], np.array([0]))
    assert len(poses) == 2 and all(p.box_xywh == [] for p in poses)
    np.testing.assert_allclose([p.score for p in poses], cands.scores[0, :2], rtol=1e-5)
    assert sorted(pose_result(1, p)["psm"] for p in poses) == pytest.approx([0.5, 0.880797])


def test_merge_uses_learned_pose_scores_in_place_of_keypoint_rescoring():
    kps = np.zeros((2, 17, 3), np.float32)
    kps[1, :, 0] = 100
    kps[..., 2] = [[0.9], [0.3]]
    base = merge_instances(kps, [1.0, 1.0], [1000, 1000], [0, 0])
    assert base.keep.tolist() == [0, 1]
    learned = merge_instances(kps, [1.0, 1.0], [1000, 1000], [0, 0], pose_scores=[0.2, 0.8])
    assert learned.keep.tolist() == [1, 0]
    np.testing.assert_allclose(learned.scores, [0.2, 0.8])


def test_psm_scores_a_pose_as_the_dense_head_does_at_its_location():
    """`score_poses` reads the PSM at the location and level a pose is assigned to, from the
    features aligned to its keypoints: the dense quality output where the first-stage pose is
    that pose."""
    model = tiny()
    x = torch.rand(1, 3, SIZE, SIZE) * 255
    with torch.no_grad():
        feats = model.trunk(x)
        pose = torch.as_tensor(_person(55.5, 55.5, 50)[:, :2])  # 100 px: level 1, stride 16
        level, s = 1, STRIDES[1]
        reg_feat = model.reg_tower(feats[level])
        h, w = reg_feat.shape[-2:]
        offsets = torch.zeros(1, 17, 2, h, w)
        offsets[0, :, :, 3, 3] = pose - (3 * s + (s - 1) / 2)  # location (3, 3) is at 55.5
        dense = model.quality_pred(torch.relu(model._align(reg_feat, offsets, s)))[0, 0, 3, 3]
        scored = model.score_poses(feats, pose[None])
    assert level_of(100) == level
    np.testing.assert_allclose(scored, [float(dense.sigmoid())], rtol=1e-5)


def test_scorer_rescores_top_down_poses_and_refuses_whole_image_networks(tmp_path):
    ckpt = tmp_path / "pfs.safetensors"
    save_checkpoint(ckpt, tiny(), "coco")
    scorer = PsmScorer.from_checkpoint(str(ckpt), "cpu")
    top_down = build_model("hrnet_w8_tiny", num_instances=2).eval()
    est = PoseEstimator(top_down, "coco", EngineOptions(rescore="psm", flip_test=False), "cpu",
                        scorer)
    image = np.random.default_rng(0).integers(0, 255, (120, 90, 3), np.uint8)
    boxes = [[b for b in whole_image_boxes([image])[0]]]
    boxes[0][0].source = "gt"
    poses = est.predict([image], boxes)[0]
    assert poses and all(0 < p.score < 1 for p in poses)
    expected = scorer.score([image], [np.stack([p.keypoints for p in poses])])[0]
    decay = np.where([p.instance for p in poses], 0.5, 1.0)
    np.testing.assert_allclose([p.score for p in poses], expected * decay, rtol=1e-5)
    np.testing.assert_allclose([p.psm for p in poses], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="scores its own poses"):
        PoseEstimator(tiny(), "coco", EngineOptions(rescore="psm"), "cpu", scorer)
    with pytest.raises(ValueError, match="goes with a pose scorer"):
        PoseEstimator(top_down, "coco", EngineOptions(rescore="psm"), "cpu")


def test_box_source_of_a_whole_image_network():
    assert isinstance(box_source(whole_image=True), WholeImage)
    with pytest.raises(MipnetError, match="leave out --boxes"):
        box_source(boxes="dets.json", whole_image=True)


def _config(realdata_dir, tmp_path, **overrides) -> PfsTrainConfig:
    mini = realdata_dir / "coco_mini"
    ann = mini / "annotations" / "person_keypoints_train2017.json"
    values = {"train_ann": str(ann), "train_images": str(mini / "train2017"),
              "input_size": (SIZE, SIZE), "batch_size": 2, "workers": 0, "epochs": 2,
              "max_steps_per_epoch": 2, "out_dir": str(tmp_path / "run"),
              "init": "weights/yolox_nano_coco.safetensors"}
    values.update(overrides)
    return PfsTrainConfig(**values)


def test_training_resume_is_exact(realdata_dir, tmp_path):
    whole = PfsTrainer(_config(realdata_dir, tmp_path, out_dir=str(tmp_path / "a")))
    assert whole.init_report.startswith("backbone + neck (154 tensors)")
    whole.fit()
    broken = PfsTrainer(_config(realdata_dir, tmp_path, out_dir=str(tmp_path / "b")))
    with pytest.raises(KeyboardInterrupt):
        broken.fit(stop_after=(1, 1))
    resumed = PfsTrainer(_config(realdata_dir, tmp_path, out_dir=str(tmp_path / "b")))
    resumed.resume()
    resumed.fit()
    for (name, a), b in zip(whole.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_train_eval_and_predict_commands(realdata_dir, tmp_path, capsys):
    mini = realdata_dir / "coco_mini"
    ann = mini / "annotations" / "person_keypoints_train2017.json"
    config = tmp_path / "pfs.toml"
    config.write_text(f'train_ann = "{ann}"\ntrain_images = "{mini / "train2017"}"\n'
                      f'val_ann = "{ann}"\nval_images = "{mini / "train2017"}"\n'
                      f'arch = "pfs_yolox_nano"\ninput_size = [{SIZE}, {SIZE}]\n'
                      'epochs = 1\nbatch_size = 2\nworkers = 0\nmax_steps_per_epoch = 1\n'
                      f'out_dir = "{tmp_path / "run"}"\n')
    assert run_app(["train", str(config)]) == 0
    assert "single stage, quality psm" in capsys.readouterr().out
    weights = tmp_path / "run" / "last.safetensors"
    _, meta = load_checkpoint(weights)
    assert meta.config.arch == "pfs" and meta.provenance["quality"] == "psm"
    point = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["val"][
        "operating_point"]  # the F1-best pose score becomes the drawing threshold, if any
    assert meta.config.kpt_thresh == (0.3 if point is None else round(point["threshold"], 3))
    metrics = tmp_path / "metrics.json"
    assert run_app(["eval", str(ann), str(mini / "train2017"), "--weights", str(weights),
                    "--json", str(metrics)]) == 0
    report = json.loads(metrics.read_text())
    assert "AP" in report["metrics"]["single stage"]
    assert run_app(["eval", str(ann), str(mini / "train2017"), "--weights", str(weights),
                    "--detect"]) == 2
    assert "finds the people itself" in capsys.readouterr().err
    images = sorted((mini / "train2017").glob("*.jpg"))[:2]
    out = tmp_path / "results.json"
    assert run_app(["predict", *map(str, images), "--weights", str(weights),
                    "--json", str(out)]) == 0
    assert isinstance(json.loads(out.read_text()), list)


def test_zoom_out_jitter_shrinks_the_people(tmp_path):
    """With zoom out always on, every person comes out smaller than without it (same image,
    same seed), by at most the zoom factor; its area shrinks with it."""
    import cv2

    from mipnet_cli.data.scenes import SceneAugment, SceneDataset

    cv2.imwrite(str(tmp_path / "a.png"), np.full((100, 100, 3), 90, np.uint8))
    kps = [v for x, y in zip(np.linspace(20, 80, 17), np.linspace(10, 90, 17), strict=True)
           for v in (x, y, 2)]
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": kps,
                         "num_keypoints": 17, "bbox": [20, 10, 60, 80], "area": 4800}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.names),
                        "skeleton": []}]}))
    still = dict(scale=0.0, shift=0.0, flip_prob=0.0, color_jitter=0.0)

    def sample(augment: SceneAugment) -> tuple[float, float]:
        ds = SceneDataset(tmp_path / "ann.json", tmp_path, 64, augment=augment)
        _, joints, _, areas, n = ds[0]
        assert n == 1
        return float(joints[0, :, 1].max() - joints[0, :, 1].min()), float(areas[0])

    plain = sample(SceneAugment(**still))
    zoomed = sample(SceneAugment(**still, zoom_out=3.0, zoom_prob=1.0))
    ratio = zoomed[0] / plain[0]
    assert 1 / 3 <= ratio < 0.999
    assert zoomed[1] / plain[1] == pytest.approx(ratio**2, rel=1e-3)
