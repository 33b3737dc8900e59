"""Models: MIMB semantics, official state-dict layouts, equivalence with the official code."""

from __future__ import annotations

import json

import pytest
import torch

from mipnet_cli.models import (
    MIMB,
    build_from_config,
    build_model,
    config_from_official,
    count_parameters,
    instance_lambdas,
    model_config,
)

MANIFESTS = {
    "manifest_mipnet_pose_hrnet_se_lambda_w32_256x192.json": ("hrnet_w32", 2),
    "manifest_mipnet_pose_hrnet_se_lambda_w48_384x288.json": ("hrnet_w48", 2),
    "manifest_mipnet_pose_resnet_se_lambda_res50_256x192.json": ("resnet50", 2),
    "manifest_hrnet_pose_hrnet_w32_256x192.json": ("hrnet_w32", 1),
    "manifest_hrnet_pose_hrnet_w48_384x288.json": ("hrnet_w48", 1),
}


def meta_model(name: str, instances: int):
    with torch.device("meta"):
        return build_model(name, num_instances=instances)


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BatchNorm layers non-trivial statistics so eval-mode outputs depend on them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight.data, generator=g)


def test_mimb_is_squeeze_excite_times_lambda_embedding():
    torch.manual_seed(0)
    block = MIMB(16, lambda_dim=2, reduction=4).eval()
    randomise_batchnorm(block)
    x, lam = torch.randn(3, 16, 5, 4), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
    fc1, fc2 = block.fc[0].weight, block.fc[2].weight
    assert fc1.shape == (4, 16) and block.fc[0].bias is None and block.fc[2].bias is None
    squeeze = x.mean(dim=(2, 3))
    excite = torch.sigmoid(torch.relu(squeeze @ fc1.T) @ fc2.T)
    bn = block.fc_lambda[1]
    h = block.fc_lambda[0](lam)
    h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    embed = torch.sigmoid(block.fc_lambda[3](torch.relu(h)))
    expected = x * excite[:, :, None, None] * embed[:, :, None, None]
    torch.testing.assert_close(block(x, lam), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("manifest", sorted(MANIFESTS))
def test_state_dict_matches_official_manifest(reference_dir, manifest):
    name, instances = MANIFESTS[manifest]
    expected = json.loads((reference_dir / manifest).read_text())
    state = meta_model(name, instances).state_dict()
    ours = [[k, list(v.shape), str(v.dtype)] for k, v in state.items()]
    assert ours == expected  # names, shapes, dtypes and order


def test_parameter_counts_of_the_paper_configurations():
    hrnet32 = count_parameters(meta_model("hrnet_w32", 1))
    mip32 = count_parameters(meta_model("hrnet_w32", 2))
    hrnet48 = count_parameters(meta_model("hrnet_w48", 1))
    assert round(hrnet32 / 1e6, 1) == 28.5
    assert round(hrnet48 / 1e6, 1) == 63.6
    assert 0 < mip32 / hrnet32 - 1 < 0.03
    assert count_parameters(meta_model("resnet50", 2)) == 34_986_193


def load_tiny(reference_dir, name: str, from_full_cfg: bool = False):
    cfg = json.loads((reference_dir / f"{name}.config.json").read_text())
    blob = torch.load(reference_dir / f"{name}.pt", weights_only=True)
    model = build_from_config(config_from_official(cfg["full_cfg" if from_full_cfg else "config"]))
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.eval(), blob


@pytest.mark.parametrize("name", ["tiny_mipnet_pose_hrnet_se_lambda",
                                  "tiny_mipnet_pose_hrnet_se_lambda_allse"])
@pytest.mark.parametrize("from_full_cfg", [False, True])
def test_tiny_mipnet_reproduces_official_outputs(reference_dir, name, from_full_cfg):
    model, blob = load_tiny(reference_dir, name, from_full_cfg)
    x, lam = blob["inputs"], blob["lambda_vecs"]
    with torch.no_grad():
        assert (model(x, lam) - blob["outputs"]).abs().max() < 1e-5
        same = model.forward_multi(x[:1], lam)[0]
        assert (same - blob["outputs_same_image"]).abs().max() < 1e-5
        # λ really selects: the two instances differ clearly on the same crop
        assert (same[0] - same[1]).abs().max() > 0.01
        model.double()
        out64 = model(x.double(), lam.double())
        assert (out64 - blob["outputs_fp64"]).abs().max() < 1e-9
        same64 = model.forward_multi(x[:1].double(), lam.double())[0]
        assert (same64 - blob["outputs_same_image_fp64"]).abs().max() < 1e-9


def test_tiny_hrnet_reproduces_official_outputs(reference_dir):
    model, blob = load_tiny(reference_dir, "tiny_hrnet_pose_hrnet")
    with torch.no_grad():
        out = model(blob["inputs"])
        # fp32 noise of this net is ~2e-5 (the reference's own fp32 vs fp64 gap is 2.1e-5)
        assert (out - blob["outputs"]).abs().max() < 1e-4
        out64 = model.double()(blob["inputs"].double())
        assert (out64 - blob["outputs_fp64"]).abs().max() < 1e-9


def test_tiny_intermediates_match(reference_dir):
    model, blob = load_tiny(reference_dir, "tiny_mipnet_pose_hrnet_se_lambda")
    captured = {}
    model.stage4.register_forward_hook(lambda m, i, o: captured.__setitem__("stage4_out", o))
    model.stage3_se.register_forward_hook(lambda m, i, o: captured.__setitem__("stage4_in", o))
    with torch.no_grad():
        model(blob["inputs"], blob["lambda_vecs"])
    for key in ("stage4_in", "stage4_out"):
        for ours, ref in zip(captured[key], blob["intermediates"][key], strict=True):
            assert (ours - ref).abs().max() < 1e-5


@pytest.mark.parametrize("name,size", [("hrnet_w8_tiny", (96, 64)), ("resnet18", (96, 64)),
                                       ("hrnet_w8_tiny", (128, 96))])
def test_shared_trunk_equals_separate_passes(name, size):
    torch.manual_seed(1)
    model = build_model(name, num_instances=2, image_size=size)
    randomise_batchnorm(model)
    model.eval()
    x = torch.randn(3, 3, *size)
    with torch.no_grad():  # heatmap-like output magnitudes (about 1), as trained models give
        model.final_layer.weight /= model(x, instance_lambdas(2)[:1].expand(3, 2)).abs().max()
    lams = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    with torch.no_grad():
        multi = model.forward_multi(x, lams)
        assert multi.shape == (3, 3, 17, size[0] // 4, size[1] // 4)
        for i, lam in enumerate(lams):
            separate = model(x, lam.expand(3, 2))
            assert (multi[:, i] - separate).abs().max() < 1e-5
        assert (multi[:, 0] - multi[:, 1]).abs().max() > 1e-3


def test_shared_trunk_in_training_normalises_all_instances_together():
    """In training mode every instance goes through the tail in one batch (one set of batch
    norm statistics), as when the network runs on the B·L rows directly."""
    torch.manual_seed(2)
    model = build_model("hrnet_w8_tiny", num_instances=2, image_size=(64, 64)).train()
    x = torch.randn(4, 3, 64, 64)
    lams = instance_lambdas(2)
    multi = model.forward_multi(x, lams)
    rows = model(x.repeat_interleave(2, dim=0), lams.repeat(4, 1)).view(4, 2, 17, 16, 16)
    assert (multi - rows).abs().max() < 1e-5
    model.eval()
    with torch.no_grad():
        assert (model.forward_multi(x, lams) - multi).abs().max() > 1e-4  # running statistics


def test_trunk_stops_at_first_mimb():
    tiny = model_config("hrnet_w8_tiny", num_instances=2)
    assert build_from_config(tiny).split_point == 2  # before stage 4
    allse = model_config("hrnet_w8_tiny", num_instances=2, se_modules=(True, True, True, True))
    assert build_from_config(allse).split_point == 0
    assert build_from_config(model_config("resnet18", num_instances=2)).split_point == 2


def test_single_instance_network_has_no_mimb_and_ignores_lambda():
    model = build_model("hrnet_w8_tiny", num_instances=1).eval()
    assert not any("_se." in k for k in model.state_dict())
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        out = model(x)
        multi = model.forward_multi(x, instance_lambdas(2))
    assert multi.shape == (2, 2, 17, 32, 24)
    assert torch.equal(multi[:, 0], out) and torch.equal(multi[:, 1], out)


def test_lambda_shape_is_checked():
    model = build_model("hrnet_w8_tiny", num_instances=2).eval()
    with pytest.raises(ValueError, match="lam"):
        model(torch.randn(2, 3, 128, 96))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        model(torch.randn(2, 3, 128, 96), torch.zeros(2, 3))


def test_instance_lambdas_encoding():
    assert instance_lambdas(2).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert instance_lambdas(3).shape == (3, 3)
    assert model_config("hrnet_w32", num_instances=3).lambda_dim == 3


def test_config_round_trip():
    cfg = model_config("hrnet_w18_small", num_instances=2, image_size=(192, 144), num_joints=14)
    from mipnet_cli.models import ModelConfig

    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("hrnet_w8_tiny", image_size=(64, 48))
