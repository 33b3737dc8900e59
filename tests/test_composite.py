"""Crowds of real people (`mipnet synth --real-people`): exact visibility, the person split,
determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mipnet_cli.cli import run_app
from mipnet_cli.core.errors import MipnetError
from mipnet_cli.synth import SynthConfig
from mipnet_cli.synth.composite import body_fraction, composite_scene, load_cutouts
from mipnet_cli.synth.dataset import SampleRenderer


@pytest.fixture(scope="module")
def coco_mini(realdata_dir: Path) -> tuple[Path, Path]:
    root = realdata_dir / "coco_mini"
    return root / "annotations" / "person_keypoints_train2017.json", root / "train2017"


def test_people_are_split_by_source_person(coco_mini) -> None:
    train = load_cutouts(*coco_mini, split="train", val_fraction=0.2)
    val = load_cutouts(*coco_mini, split="val", val_fraction=0.2)
    assert len(train) > 3 * len(val) > 0
    assert not {c.source for c in train} & {c.source for c in val}
    for c in train[:10]:
        assert c.rgb.shape[:2] == c.alpha.shape and c.alpha.max() == 1.0
        assert (c.keypoints[:, 2] > 0).sum() >= 6


def test_visibility_is_what_the_people_in_front_cover(coco_mini) -> None:
    cutouts = load_cutouts(*coco_mini)
    for seed in range(5):
        scene = composite_scene(np.random.default_rng(seed), cutouts, 320, 240, 4, 1.0,
                                (0.6, 0.9))
        for p in scene.people:
            k = p.keypoints
            labelled = k[:, 2] > 0
            assert np.all((k[labelled, 0] >= 0) & (k[labelled, 0] <= 319))
            px, py = np.round(k[labelled, :2]).astype(int).T
            on_top = scene.label[py, px]
            # A visible joint is not under a person pasted later; an occluded one is.
            assert np.all(on_top[k[labelled, 2] == 2] <= p.index + 1)
            covered = on_top > p.index + 1
            assert np.all(k[labelled][covered, 2] == 1)
            assert p.visible_area == int((scene.label == p.index + 1).sum())


def test_close_ups_are_scaled_as_parts_of_a_body() -> None:
    k = np.zeros((17, 3))
    k[[5, 6], 2] = 2
    assert body_fraction(k) == 0.35
    k[[15, 16], 2] = 2
    assert body_fraction(k) == 1.0


def test_synth_real_people_writes_a_coco_set_deterministically(coco_mini, tmp_path) -> None:
    ann, images = coco_mini
    args = ["synth", "-n", "3", "--seed", "4", "--width", "256", "--height", "192",
            "--max-people", "3", "--real-people", str(ann), "--real-images", str(images),
            "--workers", "1"]
    assert run_app([*args, str(tmp_path / "a")]) == 0
    assert run_app([*args, str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "annotations.json").read_text())
    b = json.loads((tmp_path / "b" / "annotations.json").read_text())
    assert a["annotations"] == b["annotations"] and len(a["images"]) == 3
    for name in ("000000.jpg", "000002.jpg"):
        assert (tmp_path / "a" / "images" / name).read_bytes() == \
            (tmp_path / "b" / "images" / name).read_bytes()
    assert a["annotations"] and all(x["num_keypoints"] > 0 for x in a["annotations"])


def test_bad_real_people_options(coco_mini, tmp_path, capsys) -> None:
    ann, images = coco_mini
    assert run_app(["synth", str(tmp_path / "x"), "--real-people", str(ann)]) == 2
    assert "--real-images" in capsys.readouterr().err
    with pytest.raises(MipnetError, match="need at least"):
        SampleRenderer(SynthConfig(max_people=500, real_people=(str(ann),),
                                   real_images=(str(images),)))
