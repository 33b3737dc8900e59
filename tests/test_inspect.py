"""λ sweeps and heatmap grids: the sweep's end points are the engine's instances, one batched
call, and the figures have the sizes their layouts promise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mipnet_cli.checkpoints.format import save_checkpoint
from mipnet_cli.cli import run_app
from mipnet_cli.core.geometry import warp_crops
from mipnet_cli.inspect.figures import heatmap_layout
from mipnet_cli.inspect.sweep import lambda_sweep
from mipnet_cli.models import build_model
from mipnet_cli.pose.engine import EngineOptions, PoseEstimator

BOX = [60.0, 30.0, 70.0, 150.0]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("hrnet_w8_tiny", num_instances=2).eval()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray((rng.random((200, 240, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model)
    return path


def _image(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("flip", [True, False])
def test_sweep_end_points_are_the_engine_instances(model, photo, flip, monkeypatch) -> None:
    est = PoseEstimator(model, "coco", EngineOptions(flip_test=flip), "cpu")
    image = _image(photo)
    engine = est.estimate([image], np.array([BOX]), np.array([0])).keypoints[0]  # (2, K, 3)
    calls = []
    forward_multi = type(model).forward_multi

    def counted(self, x, lams=None):
        calls.append((tuple(x.shape), tuple(lams.shape)))
        return forward_multi(self, x, lams)

    monkeypatch.setattr(type(model), "forward_multi", counted)
    sweep = lambda_sweep(est, image, BOX, steps=9)
    assert calls == [((2 if flip else 1, 3, 128, 96), (9, 2))]  # one batched call for all λ
    np.testing.assert_allclose(sweep.keypoints[0], engine[0], atol=1e-4)
    np.testing.assert_allclose(sweep.keypoints[-1], engine[1], atol=1e-4)
    np.testing.assert_allclose(sweep.alphas, np.linspace(1, 0, 9))
    np.testing.assert_allclose(sweep.lambdas[4], [0.5, 0.5])
    # The random network's instances differ, so the sweep really moves between them.
    assert np.abs(engine[0, :, :2] - engine[1, :, :2]).max() > 1.0


def test_sweep_middle_step_is_the_soft_selector(model, photo) -> None:
    est = PoseEstimator(model, "coco", EngineOptions(flip_test=False), "cpu")
    image = _image(photo)
    sweep = lambda_sweep(est, image, BOX, steps=5)  # a = 1, .75, .5, .25, 0
    centers, scales = est.boxes_to_center_scale(np.array(BOX))
    crop = warp_crops([image], centers, scales, (96, 128), normalize=True)
    with torch.no_grad():
        heatmaps = model(crop, torch.tensor([[0.25, 0.75]]))
    direct = est.decode(heatmaps[:, None], centers, scales)[0, 0]
    np.testing.assert_allclose(sweep.keypoints[3], direct, atol=1e-4)


def test_lambda_sweep_command_writes_sheet_gif_and_plot(ckpt, photo, tmp_path, capsys) -> None:
    code = run_app(["lambda-sweep", str(photo), "--box", ",".join(map(str, BOX)),
                    "--weights", str(ckpt), "--device", "cpu", "--steps", "7", "--columns", "3",
                    "--cell-height", "64", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    stem = tmp_path / "photo_box0_lambda"
    # 7 pictures in 3 columns -> 3 rows of 64 px; the crop is 3:4 like the 96x128 input.
    assert Image.open(f"{stem}_sheet.png").size == (3 * 48, 3 * 64)
    gif = Image.open(f"{stem}.gif")
    assert gif.n_frames == 7 and gif.size == (48, 64)
    assert Image.open(f"{stem}_xy.png").size == (1400, 520)
    assert "median" in capsys.readouterr().out


def test_heatmaps_command_grid_size(ckpt, photo, tmp_path, capsys) -> None:
    box = ",".join(map(str, BOX))
    sizes = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        code = run_app(["heatmaps", str(photo), "--box", box, "--weights", str(ckpt),
                        "--device", "cpu", "--instances", str(n), "--cell-height", "64",
                        "--out", str(out)])
        assert code == 0, capsys.readouterr()
        sizes[n] = Image.open(out / "photo_box0_heatmaps.png").size
    assert sizes[2] == heatmap_layout(2, 17, 0.75, 64).size
    assert sizes[2][0] == sizes[1][0]
    assert sizes[2][1] - sizes[1][1] == 64 + 4  # one more row (and a gap)

    crowd = tmp_path / "crowd.safetensors"
    save_checkpoint(crowd, build_model("hrnet_w8_tiny", num_instances=2, num_joints=14),
                    keypoints="crowdpose")
    code = run_app(["heatmaps", str(photo), "--box", box, "--weights", str(crowd),
                    "--device", "cpu", "--cell-height", "64", "--out", str(tmp_path / "c")])
    assert code == 0, capsys.readouterr()
    width = Image.open(tmp_path / "c" / "photo_box0_heatmaps.png").size[0]
    assert sizes[2][0] - width == 3 * (48 + 4)  # 17 vs 14 joint columns


def test_heatmaps_for_ground_truth_boxes(realdata_dir, ckpt, tmp_path, capsys) -> None:
    folder = realdata_dir / "mmpose_tests" / "coco"
    ann = folder / "test_coco.json"
    data = json.loads(ann.read_text())
    image = data["images"][0]
    expected = sorted(a["id"] for a in data["annotations"]
                      if a["image_id"] == image["id"] and not a.get("iscrowd"))
    code = run_app(["heatmaps", str(folder / image["file_name"]), "--gt", str(ann),
                    "--weights", str(ckpt), "--device", "cpu", "--no-flip", "--cell-height", "48",
                    "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    stem = Path(image["file_name"]).stem
    written = sorted(int(p.name.split("_box")[1].split("_")[0])
                     for p in tmp_path.glob(f"{stem}_box*_heatmaps.png"))
    assert expected and written == expected

    # `mipnet predict --heatmaps` writes the same grids beside its overlays.
    overlays = tmp_path / "overlays"
    code = run_app(["predict", str(folder / image["file_name"]), "--gt", str(ann), "--weights",
                    str(ckpt), "--device", "cpu", "--no-flip", "--out", str(overlays),
                    "--heatmaps"])
    assert code == 0, capsys.readouterr()
    beside = sorted(p.name for p in overlays.glob(f"{stem}_box*_heatmaps.png"))
    assert beside == sorted(p.name for p in tmp_path.glob(f"{stem}_box*_heatmaps.png"))
    assert (overlays / image["file_name"]).exists()
    code = run_app(["predict", str(folder / image["file_name"]), "--gt", str(ann), "--weights",
                    str(ckpt), "--heatmaps"])
    assert code == 2 and "--out" in capsys.readouterr().err


def test_bad_box_choices(ckpt, photo, capsys) -> None:
    code = run_app(["lambda-sweep", str(photo), "--box", "1,2,3", "--weights", str(ckpt),
                    "--device", "cpu"])
    assert code == 2 and "x,y,w,h" in capsys.readouterr().err
    boxes = photo.parent / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": BOX, "score": 1}]))
    code = run_app(["lambda-sweep", str(photo), "--boxes", str(boxes), "--weights", str(ckpt),
                    "--device", "cpu"])
    assert code == 2 and "not a number" in capsys.readouterr().err  # photo.png has no id
    numbered = photo.parent / "1.png"
    numbered.write_bytes(photo.read_bytes())
    code = run_app(["lambda-sweep", str(numbered), "--boxes", str(boxes), "--box-index", "3",
                    "--weights", str(ckpt), "--device", "cpu"])
    assert code == 2 and "has 1 boxes" in capsys.readouterr().err
