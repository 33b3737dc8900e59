"""Reading still images as RGB uint8 arrays and turning CLI inputs into a list of image files."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.errors import MipnetError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)
_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"(\d+)")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an RGB uint8 array of shape (H, W, 3).

    - The EXIF orientation tag is applied, so the array is upright as a photo viewer shows it.
    - Grayscale, palette, CMYK and YCbCr images become RGB.
    - Transparency (RGBA, LA, palette with a transparent colour) is composited on black, so
      fully transparent pixels are black whatever colour the file stores under them.
    - 16-bit grayscale (PNG/TIFF) is scaled to 8 bits over the full range (65535 -> 255);
      16-bit colour files keep their 8 most significant bits (Pillow's decoding).
    - Multi-page files (TIFF) give their first page.

    Missing, empty, truncated, corrupt and non-image files raise `MipnetError` naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise MipnetError(f"{p}: file not found")
    if p.is_dir():
        raise MipnetError(f"{p}: is a folder, not an image file")
    if p.stat().st_size == 0:
        raise MipnetError(f"{p}: file is empty")
    try:
        with Image.open(p) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
            return _to_rgb_uint8(upright)
    except UnidentifiedImageError:
        raise MipnetError(f"{p}: not a readable image (unknown or unsupported format)") from None
    except Image.DecompressionBombError as exc:
        raise MipnetError(f"{p}: image is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MipnetError(f"{p}: corrupt or truncated image ({reason})") from None


def _to_rgb_uint8(im: Image.Image) -> np.ndarray:
    """Convert any Pillow image mode to a contiguous RGB uint8 array."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)
        full = 65535.0
        if mode == "F":  # float data: [0, 1], [0, 255] or 16-bit range, judged by its maximum
            peak = float(gray.max()) if gray.size else 0.0
            full = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
        gray8 = np.rint(np.clip(gray, 0.0, full) * (255.0 / full)).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray8[:, :, None], 3, axis=2))
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in im.info
    )
    if not has_alpha:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
    alpha = rgba[:, :, 3:4]
    rgb = (rgba[:, :, :3] * alpha + 127) // 255  # composite on black, rounded
    return np.ascontiguousarray(rgb.astype(np.uint8))


def _natural_key(path: Path) -> tuple:
    """Sort key that orders frame2 before frame10, case-insensitively, ties broken exactly."""
    text = str(path)
    # re.split with a group puts the digit runs at odd positions, so ints only meet ints.
    parts = tuple(int(s) if i % 2 else s.casefold() for i, s in enumerate(_DIGITS.split(text)))
    return (parts, text)


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files in `folder` (and its subfolders), skipping hidden files and folders."""
    entries: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        (p for p in entries if p.is_file() and _is_image_file(p)
         and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
        key=_natural_key,
    )


def expand_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Turn CLI arguments (files, folders, glob patterns) into an ordered list of image files.

    - A file is taken as given, whatever its extension (reading it reports a bad file).
    - A folder contributes the image files directly inside it (`recursive=True`: in all its
      subfolders too); hidden files and folders (names starting with '.') are skipped.
    - A pattern with `*`, `?` or `[` (quoted, so the shell leaves it alone; `**` spans folders)
      contributes the matching image files.

    Arguments keep their order; each folder or pattern is sorted naturally (frame2 before
    frame10). A file reached twice is listed once, at its first place. A missing path, a pattern
    with no match and a folder without images raise `MipnetError`.
    """
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        text = str(item)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            images = _folder_images(p, recursive)
            if not images:
                hint = "" if recursive else " (add --recursive to search subfolders)"
                exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
                raise MipnetError(f"{p}: folder contains no images ({exts}){hint}")
            found.extend(images)
        elif _GLOB_CHARS.search(text):
            matches = [Path(m) for m in glob.glob(text, recursive=True)]
            images = sorted((m for m in matches if m.is_file() and _is_image_file(m)),
                            key=_natural_key)
            if not images:
                raise MipnetError(f"{text}: no image files match this pattern")
            found.extend(images)
        else:
            raise MipnetError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    unique: list[Path] = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
