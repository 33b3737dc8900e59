"""Image reading (formats, orientation, bit depth, bad files) and input expansion."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mipnet_cli.core.errors import MipnetError
from mipnet_cli.media.images import expand_inputs, read_image


def _pattern(h: int = 24, w: int = 40) -> np.ndarray:
    """An asymmetric RGB test pattern: a red block top-left, a green stripe at the bottom."""
    img = np.full((h, w, 3), 60, np.uint8)
    img[:8, :10] = (250, 10, 10)
    img[-4:, :] = (10, 240, 10)
    return img


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff", ".webp"])
def test_lossless_formats_read_exactly(tmp_path: Path, ext: str) -> None:
    img = _pattern()
    path = tmp_path / f"pattern{ext}"
    Image.fromarray(img).save(path, **({"lossless": True} if ext == ".webp" else {}))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 40, 3)
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, img)


def test_jpeg_reads_close(tmp_path: Path) -> None:
    img = _pattern()
    path = tmp_path / "pattern.jpg"
    Image.fromarray(img).save(path, quality=95)
    out = read_image(path)
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - img).mean() < 6


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # stored sideways: a viewer turns it 90° clockwise
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
    ],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, expected) -> None:
    img = _pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rot{orientation}.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=98)
    out = read_image(path)
    want = expected(img)
    assert out.shape == want.shape
    assert np.abs(out.astype(int) - want).mean() < 6


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (6, 1))
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    out = read_image(path)
    assert out.shape == (6, 25, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_16bit_grayscale_png_and_tiff_scale_to_full_range(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    for name in ("deep.png", "deep.tif"):
        path = tmp_path / name
        Image.fromarray(values).save(path)
        assert Image.open(path).mode.startswith("I;16")
        out = read_image(path)
        # Clipping (Pillow's convert("L")) would give 255 everywhere but the first pixel.
        np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
        assert out.shape == (1, 4, 3)


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = [[255, 0, 128], [255, 255, 0]]
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = read_image(path)
    np.testing.assert_array_equal(out[0, 0], [200, 100, 50])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 2], [100, 50, 25])


def test_palette_and_gray_alpha(tmp_path: Path) -> None:
    pal = Image.fromarray(_pattern()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (24, 40, 3)
    gray_alpha = np.dstack([np.full((3, 3), 200, np.uint8), np.full((3, 3), 255, np.uint8)])
    la = Image.fromarray(gray_alpha, mode="LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.full((3, 3, 3), 200))


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(_pattern(200, 200) + np.random.default_rng(0).integers(0, 5, (200, 200, 3),
                                                                             dtype=np.uint8)
                    ).save(good, quality=90)
    data = good.read_bytes()
    cases = {
        "truncated.jpg": data[: len(data) // 3],
        "empty.jpg": b"",
        "text.jpg": b"this is not an image, just some words\n",
        "garbage.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    messages = {}
    for name in [*cases, "missing.jpg"]:
        with pytest.raises(MipnetError) as info:
            read_image(tmp_path / name)
        msg = str(info.value)
        assert name in msg and "\n" not in msg
        messages[name] = msg
    assert "empty" in messages["empty.jpg"]
    assert "not found" in messages["missing.jpg"]
    assert "truncated" in messages["truncated.jpg"]
    assert "not a readable image" in messages["text.jpg"]
    with pytest.raises(MipnetError, match="folder"):
        read_image(tmp_path)


def test_real_photo(realdata_dir: Path) -> None:
    img = read_image(realdata_dir / "mmpose_tests/coco/000000000785.jpg")
    assert img.shape == (425, 640, 3) and img.dtype == np.uint8
    assert 20 < img.mean() < 235


def _touch_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")


def test_expand_folders_files_and_globs(tmp_path: Path) -> None:
    d = tmp_path / "shots"
    _touch_images(d, ["frame10.jpg", "frame2.JPG", "frame1.png", "notes.txt", ".hidden.jpg"])
    _touch_images(d / "sub", ["deep.jpg"])
    _touch_images(d / ".thumbs", ["frame1.jpg"])
    out = expand_inputs([str(d)])
    assert [p.name for p in out] == ["frame1.png", "frame2.JPG", "frame10.jpg"]
    out = expand_inputs([str(d)], recursive=True)
    assert [p.name for p in out] == ["frame1.png", "frame2.JPG", "frame10.jpg", "deep.jpg"]
    # Argument order is kept; duplicates (also through another spelling) appear once.
    other = tmp_path / "z.webp"
    other.write_bytes(b"x")
    out = expand_inputs([str(other), str(d / "frame2.JPG"), str(d), str(d / ".." / "z.webp")])
    assert [p.name for p in out] == ["z.webp", "frame2.JPG", "frame1.png", "frame10.jpg"]
    # Quoted glob patterns, including ** across folders.
    out = expand_inputs([str(d / "*.jpg")])
    assert [p.name for p in out] == ["frame10.jpg"]
    out = expand_inputs([os.path.join(str(d), "**", "*.jpg")])
    assert [p.name for p in out] == ["frame10.jpg", "deep.jpg"]
    # An explicit file is taken whatever its extension.
    assert expand_inputs([str(d / "notes.txt")]) == [d / "notes.txt"]


def test_expand_errors(tmp_path: Path) -> None:
    with pytest.raises(MipnetError, match="nowhere.jpg: no such file"):
        expand_inputs([str(tmp_path / "nowhere.jpg")])
    with pytest.raises(MipnetError, match="no image files match"):
        expand_inputs([str(tmp_path / "*.png")])
    (tmp_path / "empty" / "inner").mkdir(parents=True)
    (tmp_path / "empty" / "inner" / "a.png").write_bytes(b"x")
    with pytest.raises(MipnetError, match="--recursive"):
        expand_inputs([str(tmp_path / "empty")])
    assert len(expand_inputs([str(tmp_path / "empty")], recursive=True)) == 1
