"""Conversion of the published real networks: our readers, our PyTorch networks against the
original graphs (onnxruntime for YOLOX, an independent NumPy evaluation of the TF.js graph
for MoveNet), the shipped converted files, and bad sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tfjs_reference import run_graph

from mipnet_cli.checkpoints.convert import convert_file
from mipnet_cli.checkpoints.convert.movenet import movenet_from_tfjs
from mipnet_cli.checkpoints.convert.onnx_file import read_onnx
from mipnet_cli.checkpoints.convert.tfjs import read_tfjs
from mipnet_cli.checkpoints.convert.yolox import yolox_from_onnx
from mipnet_cli.checkpoints.detector import load_yolox
from mipnet_cli.checkpoints.format import load_checkpoint
from mipnet_cli.cli import run_app
from mipnet_cli.core.errors import MipnetError
from mipnet_cli.detect.yolox import YoloxPersonDetector

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
PHOTOS = ("person.jpg", "messi5.jpg", "basketball1.png")


def _photos(realdata_dir: Path) -> list[np.ndarray]:
    return [cv2.imread(str(realdata_dir / "photos" / name)) for name in PHOTOS]  # BGR


def _letterbox_416(bgr: np.ndarray) -> np.ndarray:
    """YOLOX's own preprocessing (OpenCV resize, top-left, 114 padding): (1, 3, 416, 416)."""
    r = min(416 / bgr.shape[0], 416 / bgr.shape[1])
    resized = cv2.resize(bgr, (int(bgr.shape[1] * r), int(bgr.shape[0] * r)))
    pad = np.full((416, 416, 3), 114, np.uint8)
    pad[:resized.shape[0], :resized.shape[1]] = resized
    return pad.transpose(2, 0, 1)[None].astype(np.float32)


def test_onnx_reader_agrees_with_the_onnx_package(weights_src: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    for name in ("yolox_nano_416x416.onnx", "nanodet_m_320.onnx"):
        path = weights_src / "detectors" / name
        ours = read_onnx(path)
        ref = onnx.load(str(path))
        inits = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
        assert set(inits) == set(ours.initializers)
        for key, value in inits.items():
            assert value.dtype == ours.initializers[key].dtype
            np.testing.assert_array_equal(value, ours.initializers[key])
        assert [(n.op_type, list(n.input), list(n.output)) for n in ref.graph.node] == \
            [(n.op, n.inputs, n.outputs) for n in ours.nodes]


def test_yolox_nano_equals_onnxruntime_on_real_photos(weights_src: Path,
                                                      realdata_dir: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = weights_src / "detectors" / "yolox_nano_416x416.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model64 = yolox_from_onnx(path).double()
    model32 = yolox_from_onnx(path)
    for bgr in _photos(realdata_dir):
        x = _letterbox_416(bgr)
        theirs = session.run(None, {"images": x})[0]
        with torch.no_grad():
            exact = model64(torch.from_numpy(x).double()).numpy()
            ours = model32(torch.from_numpy(x)).numpy()
        # In float64 our network is the graph up to onnxruntime's own float32 rounding over
        # ~100 layers (measured <= 2.0e-4 on raw box offsets of magnitude <= 3.5); scores
        # (after the sigmoid) agree to 1e-4. Our float32 run is as close to the exact value.
        assert np.abs(exact - theirs).max() < 3e-4
        assert np.abs(exact[..., 4:] - theirs[..., 4:]).max() < 1e-4
        assert np.abs(ours - exact).max() < 1e-3


@pytest.mark.parametrize("variant,size", [("thunder", 256), ("lightning", 192)])
def test_movenet_equals_the_tfjs_graph_evaluated_op_by_op(weights_src: Path,
                                                          realdata_dir: Path, variant: str,
                                                          size: int) -> None:
    path = weights_src / "movenet" / f"movenet-{variant}.json"
    graph = read_tfjs(path)
    model = movenet_from_tfjs(path)
    for bgr in _photos(realdata_dir):
        rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (size, size))
        x = rgb.astype(np.int32)[None]
        ref = run_graph(graph, x)[0, 0]  # (17, 3): y, x normalised to the input; score
        with torch.no_grad():
            ours = model(torch.from_numpy(x).permute(0, 3, 1, 2).float())[0].numpy()
        y, xx = (ours[:, 1] + 0.5) / size, (ours[:, 0] + 0.5) / size
        assert np.abs(y - ref[:, 0]).max() < 1e-5 and np.abs(xx - ref[:, 1]).max() < 1e-5
        assert np.abs(ours[:, 2] - ref[:, 2]).max() < 1e-4


def test_movenet_lightning_agrees_with_the_int8_tflite_release(weights_src: Path,
                                                               realdata_dir: Path) -> None:
    """Another release of Lightning (int8-quantised TFLite, run by ai-edge-litert): the same
    network up to its quantisation, so only loose agreement is expected."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interp = litert.Interpreter(
        model_path=str(weights_src / "movenet" /
                       "lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    model = movenet_from_tfjs(weights_src / "movenet" / "movenet-lightning.json")
    errors = []
    for bgr in _photos(realdata_dir):
        rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (192, 192))
        interp.set_tensor(inp["index"], rgb[None].astype(inp["dtype"]))
        interp.invoke()
        ref = interp.get_tensor(out["index"])[0, 0]
        with torch.no_grad():
            ours = model(torch.from_numpy(rgb[None]).permute(0, 3, 1, 2).float())[0].numpy()
        confident = (ref[:, 2] > 0.3) & (ours[:, 2] > 0.3)
        d = np.hypot((ours[:, 1] + 0.5) / 192 - ref[:, 0], (ours[:, 0] + 0.5) / 192 - ref[:, 1])
        errors.append(np.median(d[confident]))
    assert max(errors) < 0.02  # median joint distance under 2 % of the crop side


def test_shipped_converted_weights_are_the_converted_sources(weights_src: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "thunder.safetensors"
    done = convert_file(weights_src / "movenet" / "movenet-thunder.json", out, half=True)
    assert done.kind == "pose" and done.provenance["licence"] == "Apache-2.0"
    fresh, _ = load_checkpoint(out)
    shipped, meta = load_checkpoint(WEIGHTS / "movenet_thunder_coco.safetensors")
    assert meta.provenance["source_sha256"] == done.provenance["source_sha256"]
    for (k, a), (_, b) in zip(fresh.state_dict().items(), shipped.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    # float16 storage is exact: MoveNet's published weights are float16
    direct = movenet_from_tfjs(weights_src / "movenet" / "movenet-thunder.json")
    for (k, a), (_, b) in zip(direct.state_dict().items(), shipped.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    detector, provenance = load_yolox(WEIGHTS / "yolox_nano_coco.safetensors")
    assert provenance["source_sha256"].startswith("695e750a")
    ref = yolox_from_onnx(weights_src / "detectors" / "yolox_nano_416x416.onnx")
    for (k, a), (_, b) in zip(ref.state_dict().items(), detector.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k


def test_shipped_detector_finds_the_people_of_a_real_photo(realdata_dir: Path) -> None:
    detector = YoloxPersonDetector.from_file(WEIGHTS / "yolox_nano_coco.safetensors",
                                             score_thresh=0.3)
    rgb = cv2.cvtColor(cv2.imread(str(realdata_dir / "photos" / "basketball1.png")),
                       cv2.COLOR_BGR2RGB)
    boxes = detector.detect([rgb, np.zeros((0, 0, 3), np.uint8)])
    assert len(boxes[0]) == 2 and boxes[1] == []  # the two players; an empty image: nobody
    centres = sorted((b.xyxy[0] + b.xyxy[2]) / 2 for b in boxes[0])
    assert centres[0] < rgb.shape[1] / 3 and centres[1] > rgb.shape[1] * 2 / 3


def _bad_sources(weights_src: Path, tmp_path: Path) -> list[tuple[str, Path, str]]:
    truncated_onnx = tmp_path / "truncated.onnx"
    truncated_onnx.write_bytes((weights_src / "detectors" / "yolox_nano_416x416.onnx")
                               .read_bytes()[:100_000])
    text_onnx = tmp_path / "notes.onnx"
    text_onnx.write_text("these are not the weights you are looking for\n")
    folder = tmp_path / "tfjs"
    folder.mkdir()
    shutil.copy(weights_src / "movenet" / "movenet-lightning.json", folder / "model.json")
    (folder / "movenet-lightning.bin").write_bytes(
        (weights_src / "movenet" / "movenet-lightning.bin").read_bytes()[:1_000_000])
    not_json = tmp_path / "broken.json"
    not_json.write_text("{ not json")
    return [
        ("truncated", truncated_onnx, "truncated ONNX file"),
        ("not a network", text_onnx, "not an ONNX model"),
        ("other architecture", weights_src / "detectors" / "nanodet_m_320.onnx",
         "not a YOLOX network"),
        ("truncated shards", folder / "model.json", "truncated"),
        ("not JSON", not_json, "not a TF.js graph model"),
    ]


def test_bad_sources_give_one_line_and_write_nothing(weights_src: Path, tmp_path: Path,
                                                     capsys) -> None:
    for case, src, message in _bad_sources(weights_src, tmp_path):
        out = tmp_path / f"{case}.safetensors"
        code = run_app(["weights", "convert", str(src), str(out)])
        err = capsys.readouterr().err
        assert code == 2, case
        assert message in err and str(src) in err.replace("\n", ""), (case, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, (case, err)
        assert not out.exists() and not list(tmp_path.glob(f".{case}*")), case
    with pytest.raises(MipnetError, match="overwrite the source"):
        convert_file(src, src)
