"""Training on real COCO annotations (coco_mini): the loss falls, resume is exact, eval runs."""

from __future__ import annotations

import json

import pytest
import torch

from mipnet_cli.checkpoints.format import load_checkpoint
from mipnet_cli.cli import run_app
from mipnet_cli.core.errors import MipnetError
from mipnet_cli.train.heatmap import TrainConfig, Trainer

NO_AUGMENT = {"scale_factor": 0.0, "rotation_prob": 0.0, "flip_prob": 0.0, "half_body_prob": 0.0}


def make_config(realdata_dir, tmp_path, name: str, **overrides) -> TrainConfig:
    mini = realdata_dir / "coco_mini"
    values = {
        "train_ann": str(mini / "annotations" / "person_keypoints_train2017.json"),
        "train_images": str(mini / "train2017"), "arch": "hrnet_w8_tiny",
        "input_size": (128, 96), "batch_size": 8, "workers": 0, "epochs": 2,
        "max_steps_per_epoch": 2, "out_dir": str(tmp_path / name), "seed": 3,
    }
    values.update(overrides)
    return TrainConfig(**values)


def test_a_few_steps_lower_the_loss(realdata_dir, tmp_path):
    cfg = make_config(realdata_dir, tmp_path, "fit", epochs=4, lr=3e-3, augment=NO_AUGMENT,
                      max_steps_per_epoch=1)
    history = Trainer(cfg, device="cpu").fit()
    losses = [r["loss"] for r in history]
    assert losses[-1] < 0.8 * losses[0], losses
    run = tmp_path / "fit"
    assert len((run / "log.jsonl").read_text().splitlines()) == 4
    assert (run / "curves.png").stat().st_size > 1000
    model, meta = load_checkpoint(run / "last.safetensors")
    assert meta.config.num_instances == 2 and meta.provenance["epochs"] == 4
    assert "CPU" in meta.provenance["hardware"] and meta.provenance["train_time_s"] > 0


def test_resume_after_interruption_matches_uninterrupted_run(realdata_dir, tmp_path):
    straight = Trainer(make_config(realdata_dir, tmp_path, "a"), device="cpu")
    straight.fit()
    interrupted = Trainer(make_config(realdata_dir, tmp_path, "b"), device="cpu")
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(stop_after=(1, 1))  # dies during the second epoch
    resumed = Trainer(make_config(realdata_dir, tmp_path, "b"), device="cpu")
    resumed.resume()
    assert resumed.epoch == 1
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.optimizer.state_dict()["state"][0]["step"] == \
        straight.optimizer.state_dict()["state"][0]["step"]


def test_train_and_eval_commands(realdata_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    mini = realdata_dir / "coco_mini"
    coco = realdata_dir / "mmpose_tests" / "coco"
    config = tmp_path / "cfg.toml"
    config.write_text(
        f'[data]\ntrain_ann = "{mini}/annotations/person_keypoints_train2017.json"\n'
        f'train_images = "{mini}/train2017"\nval_ann = "{coco}/test_coco.json"\n'
        f'val_images = "{coco}"\n[model]\narch = "hrnet_w8_tiny"\ninput_size = [128, 96]\n'
        f'[train]\nepochs = 1\nbatch_size = 8\nworkers = 0\nmax_steps_per_epoch = 1\n')
    out = tmp_path / "run"
    assert run_app(["train", str(config), "--out", str(out), "--set", "lr=0.002"]) == 0
    record = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert record["lr"] == pytest.approx(0.002)
    assert set(record["val"]) == {"merged", "instance0", "instance1"}
    capsys.readouterr()
    report = tmp_path / "eval.json"
    code = run_app(["eval", "--no-recover", str(coco / "test_coco.json"), str(coco), "--weights",
                    str(out / "best.safetensors"),
                    "--boxes", str(coco / "test_coco_det_AP_H_56.json"),
                    "--sweep", "--json", str(report), "--plot", str(tmp_path / "sweep.png")])
    assert code == 0
    data = json.loads(report.read_text())
    assert [r["threshold"] for r in data["sweep"]] == pytest.approx([i / 10 for i in range(10)])
    assert set(data["metrics"]) == {"merged", "instance0", "instance1"}
    assert all({"box_id", "instance"} <= set(r) for r in data["results"])
    assert "λ=[0,1] only" in capsys.readouterr().out
    assert (tmp_path / "sweep.png").is_file()


def test_bad_configs_give_clear_errors(tmp_path):
    with pytest.raises(MipnetError, match="unknown training settings: nonsense"):
        TrainConfig.load(None, ["train_ann=a", "train_images=b", "nonsense=1"])
    with pytest.raises(MipnetError, match="needs train_ann"):
        TrainConfig.load(None, [])
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(MipnetError, match="bad.toml"):
        TrainConfig.load(bad)


def test_param_groups_mimb_rate_and_train_only() -> None:
    """The MIMBs get lr × mimb_lr_factor; train_only freezes every other parameter, and a
    prefix that names nothing is an error."""
    from mipnet_cli.core.errors import MipnetError
    from mipnet_cli.models import MIMB, build_model
    from mipnet_cli.train.heatmap import TrainConfig, _param_groups

    model = build_model("movenet_lightning", num_instances=2)
    mimb = {id(p) for m in model.modules() if isinstance(m, MIMB) for p in m.parameters()}
    groups = _param_groups(model, TrainConfig(lr=1e-5, mimb_lr_factor=100.0))
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    assert {id(p) for p in groups[1]["params"]} == mimb
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    groups = _param_groups(model, TrainConfig(train_only=("output_mimb", "heads.center")))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(("output_mimb", "heads.center")) for n in trainable)
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    with pytest.raises(MipnetError, match="no parameter"):
        _param_groups(model, TrainConfig(train_only=("nothing",)))
