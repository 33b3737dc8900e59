"""Checkpoints: our format, the importers for official/mmpose files, the zoo and its CLI."""

from __future__ import annotations

import json
import urllib.error
from collections import OrderedDict

import pytest
import torch

from mipnet_cli.checkpoints import zoo as weights
from mipnet_cli.checkpoints.format import (
    import_checkpoint,
    infer_config,
    load_checkpoint,
    save_checkpoint,
)
from mipnet_cli.cli import run_app
from mipnet_cli.core.errors import MipnetError
from mipnet_cli.models import build_from_config, build_model, config_from_official

TINY = "tiny_mipnet_pose_hrnet_se_lambda"


@pytest.fixture(scope="module")
def tiny(reference_dir):
    blob = torch.load(reference_dir / f"{TINY}.pt", weights_only=True)
    cfg = json.loads((reference_dir / f"{TINY}.config.json").read_text())["config"]
    return blob, config_from_official(cfg)


def assert_reproduces(model, blob):
    with torch.no_grad():
        out = model(blob["inputs"], blob["lambda_vecs"])
    assert (out - blob["outputs"]).abs().max() < 1e-5


def test_our_format_round_trip_needs_no_other_arguments(tmp_path, tiny):
    blob, config = tiny
    model = build_from_config(config)
    model.load_state_dict(blob["state_dict"])
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, keypoints="coco", provenance={"trained_on": "test"})
    loaded, meta = load_checkpoint(path)
    assert meta.config == config and meta.keypoints == "coco"
    assert meta.provenance == {"trained_on": "test"}
    assert not loaded.training
    assert_reproduces(loaded, blob)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("layout", ["bare", "checkpoint_dict", "best_only", "module_prefix"])
def test_import_official_mipnet_layouts(tmp_path, tiny, layout):
    blob, _ = tiny
    sd = blob["state_dict"]
    prefixed = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    content = {
        "bare": sd,
        "checkpoint_dict": {"epoch": 3, "state_dict": prefixed, "latest_state_dict": sd,
                            "best_state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
        "best_only": {"best_state_dict": sd},
        "module_prefix": prefixed,
    }[layout]
    src = tmp_path / "final_state_128x96.pth"
    torch.save(content, src)
    model, meta = import_checkpoint(src)
    assert meta.config.num_instances == 2 and meta.config.image_size == (128, 96)
    assert meta.provenance["source_format"].startswith("official")
    assert_reproduces(model, blob)


def test_import_official_hrnet_and_mmpose_layouts(tmp_path, reference_dir):
    blob = torch.load(reference_dir / "tiny_hrnet_pose_hrnet.pt", weights_only=True)
    sd = blob["state_dict"]
    mm0 = {("keypoint_head." if k.startswith("final_layer") else "backbone.") + k: v
           for k, v in sd.items()}
    mm1 = {("head." if k.startswith("final_layer") else "backbone.") + k: v for k, v in sd.items()}
    for name, content in (("official", sd), ("mmpose0", {"state_dict": mm0, "meta": {}}),
                          ("mmpose1", {"state_dict": mm1})):
        src = tmp_path / f"{name}.pth"
        torch.save(content, src)
        model, meta = import_checkpoint(src, image_size=(128, 96))
        assert meta.config.num_instances == 1
        assert meta.provenance["source_format"].split(":")[0] == name.rstrip("01")
        with torch.no_grad():
            assert (model(blob["inputs"]) - blob["outputs"]).abs().max() < 1e-4


def test_infer_config_recovers_the_paper_architectures():
    for name, instances in (("hrnet_w32", 2), ("hrnet_w48", 1), ("resnet50", 2), ("resnet18", 1)):
        with torch.device("meta"):
            model = build_model(name, num_instances=instances)
        inferred = infer_config(model.state_dict(), model.config.image_size)
        assert inferred == model.config.__class__(**{**model.config.__dict__, "name": ""})


def test_mismatched_file_names_missing_and_unexpected_keys(tmp_path, tiny):
    blob, _ = tiny
    sd = dict(blob["state_dict"])
    sd.pop("stage4_se.se_layers.0.fc.0.weight")
    sd["extra_head.weight"] = torch.zeros(1)
    src = tmp_path / "broken.pth"
    torch.save(sd, src)
    with pytest.raises(MipnetError) as err:
        import_checkpoint(src, arch="hrnet_w32")
    msg = str(err.value)
    assert "broken.pth" in msg and "missing" in msg and "unexpected" in msg
    assert "extra_head.weight" in msg


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    src = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, src)
    with pytest.raises(MipnetError, match="evil.pth: refused: .*would call print"):
        load_checkpoint(src)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint"])
def test_garbage_files_give_one_line_errors(tmp_path, content):
    src = tmp_path / "bad.pth"
    src.write_bytes(content)
    with pytest.raises(MipnetError, match="cannot read"):
        load_checkpoint(src)
    with pytest.raises(MipnetError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_cli_import_and_info(tmp_path, tiny, capsys):
    blob, _ = tiny
    src, dst = tmp_path / "official_128x96.pth", tmp_path / "ours.safetensors"
    torch.save({"latest_state_dict": blob["state_dict"]}, src)
    assert run_app(["weights", "import", str(src), str(dst)]) == 0
    model, meta = load_checkpoint(dst)
    assert_reproduces(model, blob)
    assert meta.provenance["source_format"] == "official:latest_state_dict"
    assert run_app(["weights", "info", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "N=2" in out and "128x96" in out
    assert run_app(["weights", "import", str(tmp_path / "nope.pth"), str(dst)]) == 2
    assert "nope.pth" in capsys.readouterr().err


def test_models_command_prints_parameter_counts(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert run_app(["models"]) == 0
    out = capsys.readouterr().out
    assert "hrnet_w32" in out and "28.5 M" in out and "63.6 M" in out
    assert "hrnet-w32-coco-256x192-mmpose" in out


def test_pull_offline_says_what_to_download_and_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MIPNET_CACHE", str(tmp_path))

    def offline(url, dest):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(weights, "_download", offline)
    assert run_app(["weights", "pull", "hrnet-w32-coco-256x192-mmpose"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "hrnet_w32_coco_256x192-c78dce93_20200708.pth" in err and str(tmp_path) in err
    assert run_app(["weights", "pull", "mipnet-hrnet-w48-coco-384x288"]) == 2
    assert "rawalkhirodkar/MIPNet" in capsys.readouterr().err.replace("\n", "")


def test_pull_uses_a_hand_placed_file_and_checks_its_hash(tmp_path, monkeypatch, reference_dir):
    monkeypatch.setenv("MIPNET_CACHE", str(tmp_path))
    zoo = tmp_path / "zoo.json"
    sd = torch.load(reference_dir / "tiny_hrnet_pose_hrnet.pt", weights_only=True)["state_dict"]
    raw = tmp_path / "tiny.pth"
    torch.save(sd, raw)
    entry = {"kind": "pose", "url": "https://example.invalid/tiny.pth", "format": "official",
             "input_size": [128, 96], "keypoints": "coco", "description": "tiny",
             "sha256": weights.sha256_of(raw)}
    zoo.write_text(json.dumps({"weights": {"tiny": entry}}))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    path = weights.pull("tiny")
    model, meta = load_checkpoint(path)
    assert meta.config.image_size == (128, 96) and meta.provenance["zoo_name"] == "tiny"
    assert weights.resolve_pose_weights("tiny") == path
    entry["sha256"] = "0" * 64
    zoo.write_text(json.dumps({"weights": {"tiny2": {**entry, "filename": "tiny.pth"}}}))
    with pytest.raises(MipnetError, match="does not match"):
        weights.pull("tiny2")
