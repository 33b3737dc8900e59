"""Box geometry for top-down pose: box -> centre/scale, affine matrices, batched crops, inverses.

Conventions (those of the official HRNet/MIPNet code):

- A box is described by its centre ``(cx, cy)`` in image pixels and its ``scale`` ``(sx, sy)`` in
  units of ``PIXEL_STD`` = 200 px, both float32.
- Sizes are ``(width, height)``, as the official ``output_size`` / ``MODEL.IMAGE_SIZE``.
- Only ``scale[0] * 200`` (the box width) sets the crop extent; the crop keeps the output's aspect,
  which ``box_to_center_scale`` has already given the box. ``scale[1]`` only enters ``shift``.
- Rotations are in degrees; a positive ``rot`` shows the image content turned counter-clockwise
  in the crop (the official ``get_affine_transform``: image right becomes crop up at 90).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

PIXEL_STD = 200.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ArrayLike = np.ndarray | torch.Tensor | Sequence[float] | Sequence[Sequence[float]]


def _np(x: ArrayLike | float, dtype: type | np.dtype | None = None) -> np.ndarray:
    """A numpy copy of an array, tensor or (nested) sequence."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def box_to_center_scale(
    xywh: ArrayLike,
    aspect_ratio: float,
    padding: float = 1.25,
    pixel_std: float = PIXEL_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(..., 4)`` as ``x, y, w, h`` -> ``(centers, scales)``, each ``(..., 2)`` float32.

    As the official ``_xywh2cs``: the box is widened or heightened to ``aspect_ratio`` (model
    width / height), expressed in units of ``pixel_std`` and multiplied by ``padding`` (the
    official ``TEST.SCALE_THRE``, 1.25). The arithmetic and float32 roundings are the official
    ones, so the outputs are bit-identical to the dataset's. (The official code skips the padding
    when the centre x is exactly -1, a sentinel no caller of this function uses.)
    """
    b = _np(xywh, np.float64)
    x, y, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    centers = np.stack([x + w * 0.5, y + h * 0.5], axis=-1).astype(np.float32)
    wider = w > aspect_ratio * h
    taller = w < aspect_ratio * h
    w2 = np.where(taller, h * aspect_ratio, w)
    h2 = np.where(wider, w * 1.0 / aspect_ratio, h)
    scales = np.stack([w2 * 1.0 / pixel_std, h2 * 1.0 / pixel_std], axis=-1).astype(np.float32)
    return centers, scales * np.float32(padding)


def _official_points(
    center: np.ndarray,
    scale: np.ndarray,
    rot: np.ndarray,
    output_size: np.ndarray,
    shift: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The three source and destination points of ``get_affine_transform``, ``(N, 3, 2)`` float32.

    Every intermediate has the dtype it has in the official code under numpy 2, so the points
    (and hence the matrices solved from them) are the official ones.
    """
    n = center.shape[0]
    scale_tmp = scale * np.float32(PIXEL_STD)  # float32
    src_w = scale_tmp[:, 0]
    dst_w = output_size[:, 0].astype(np.float64)
    dst_h = output_size[:, 1].astype(np.float64)
    rot_rad = np.pi * rot / 180
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    half = (src_w * np.float32(-0.5)).astype(np.float64)
    src_dir = np.stack([0 * cs - half * sn, 0 * sn + half * cs], axis=-1)  # float64
    offset = scale_tmp * shift  # float32
    src = np.zeros((n, 3, 2), np.float32)
    dst = np.zeros((n, 3, 2), np.float32)
    src[:, 0] = center + offset
    src[:, 1] = center.astype(np.float64) + src_dir + offset.astype(np.float64)
    dst[:, 0] = np.stack([dst_w * 0.5, dst_h * 0.5], axis=-1)
    dst[:, 1] = np.stack([dst_w * 0.5, dst_h * 0.5 + dst_w * -0.5], axis=-1)
    for pts in (src, dst):
        direct = pts[:, 0] - pts[:, 1]
        pts[:, 2] = pts[:, 1] + np.stack([-direct[:, 1], direct[:, 0]], axis=-1)
    return src, dst


def get_affine_transform(
    center: ArrayLike,
    scale: ArrayLike,
    rot: float,
    output_size: Sequence[int],
    shift: ArrayLike = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """The official crop matrix ``(2, 3)`` float64: image -> crop, or crop -> image if ``inv``.

    Solved with ``cv2.getAffineTransform`` on the official float32 point triplets, so it equals
    the official ``get_affine_transform`` bit for bit.
    """
    src, dst = _official_points(
        _np(center, np.float32).reshape(1, 2),
        _np(scale, np.float32).reshape(1, 2),
        np.asarray([rot], np.float64),
        np.asarray([output_size]),
        _np(shift, np.float32).reshape(1, 2),
    )
    a, b = (dst[0], src[0]) if inv else (src[0], dst[0])
    return cv2.getAffineTransform(a, b)


def _solve_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Batched ``M @ [src_i, 1] = dst_i`` for 3 point pairs ``(N, 3, 2)`` -> ``(N, 2, 3)`` float64.

    Solves the 6x6 system of ``cv2.getAffineTransform`` with the same algorithm (LU with partial
    pivoting, first largest pivot, division in the back substitution), vectorised over N, so the
    result is bit-identical to OpenCV's. Degenerate triplets give an all-zero matrix, as OpenCV.
    """
    n = src.shape[0]
    s = src.astype(np.float64)
    a = np.zeros((n, 6, 6))
    b = np.zeros((n, 6))
    for i in range(3):
        a[:, 2 * i, 0:2] = a[:, 2 * i + 1, 3:5] = s[:, i]
        a[:, 2 * i, 2] = a[:, 2 * i + 1, 5] = 1.0
        b[:, 2 * i : 2 * i + 2] = dst[:, i]
    rows = np.arange(n)
    singular = np.zeros(n, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(6):
            k = i + np.argmax(np.abs(a[:, i:, i]), axis=1)
            singular |= np.abs(a[rows, k, i]) < np.finfo(np.float64).eps * 100
            a[rows, i], a[rows, k] = a[rows, k], a[rows, i].copy()
            b[rows, i], b[rows, k] = b[rows, k], b[rows, i].copy()
            d = -1 / a[:, i, i]
            for j in range(i + 1, 6):
                alpha = a[:, j, i] * d
                for col in range(i + 1, 6):
                    a[:, j, col] += alpha * a[:, i, col]
                b[:, j] += alpha * b[:, i]
        for i in range(5, -1, -1):
            acc = b[:, i].copy()
            for col in range(i + 1, 6):
                acc -= a[:, i, col] * b[:, col]
            b[:, i] = acc / a[:, i, i]
    b[singular] = 0.0
    return b.reshape(n, 2, 3)


def affine_matrices(
    centers: ArrayLike,
    scales: ArrayLike,
    output_size: Sequence[int] | ArrayLike,
    rotations: ArrayLike | float = 0.0,
    shifts: ArrayLike | None = None,
    inv: bool = False,
) -> np.ndarray:
    """Vectorised ``get_affine_transform`` for many boxes: ``(N, 2, 3)`` float64.

    ``centers``/``scales`` are ``(N, 2)``; ``output_size`` is one ``(w, h)`` or ``(N, 2)``;
    ``rotations`` (degrees) and ``shifts`` broadcast to ``N``. The point triplets are the official
    float32 ones and they are solved as ``cv2.getAffineTransform`` solves them, so every matrix is
    bit-identical to the official ``get_affine_transform``.
    """
    c = _np(centers, np.float32).reshape(-1, 2)
    n = c.shape[0]
    s = np.broadcast_to(_np(scales, np.float32).reshape(-1, 2), (n, 2))
    size = np.broadcast_to(_np(output_size).reshape(-1, 2), (n, 2))
    rot = np.broadcast_to(_np(rotations, np.float64).reshape(-1), (n,))
    sh = np.zeros((n, 2), np.float32) if shifts is None else _np(shifts, np.float32).reshape(-1, 2)
    src, dst = _official_points(c, s, rot, size, np.broadcast_to(sh, (n, 2)))
    return _solve_affine(dst, src) if inv else _solve_affine(src, dst)


def affine_transform_points(points: ArrayLike, matrices: ArrayLike) -> np.ndarray:
    """Apply ``(..., 2, 3)`` affine matrices to points ``(..., P, 2)``: ``t @ [x, y, 1]``, float64.

    Evaluated as a matrix-vector product like the official ``affine_transform`` (``np.dot``), which
    reproduces its roundings.
    """
    p = _np(points, np.float64)
    m = _np(matrices, np.float64)
    hom = np.concatenate([p, np.ones(p.shape[:-1] + (1,))], axis=-1)
    return np.matmul(m[..., None, :, :], hom[..., None])[..., 0]


def transform_preds(
    coords: ArrayLike,
    centers: ArrayLike,
    scales: ArrayLike,
    heatmap_size: Sequence[int] | ArrayLike,
) -> np.ndarray:
    """Heatmap coordinates ``(..., K, 2)`` -> image pixels, float64 (official ``transform_preds``).

    ``centers``/``scales`` have the leading shape of ``coords`` plus ``(2,)``; ``heatmap_size`` is
    ``(w, h)`` (or one per item). The inverse crop matrix has no rotation, as the official one.
    """
    c = _np(coords, np.float64)
    lead = c.shape[:-2]
    m = affine_matrices(centers, scales, heatmap_size, inv=True).reshape(*lead, 2, 3)
    return affine_transform_points(c, m)


def _as_chw(image: np.ndarray | torch.Tensor, channels_last: bool | None) -> torch.Tensor:
    """One image as a ``(3, H, W)`` tensor (no copy where possible)."""
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if t.ndim != 3 or 3 not in (t.shape[0], t.shape[-1]):
        raise ValueError(f"expected an image of shape (H, W, 3) or (3, H, W), got {tuple(t.shape)}")
    if channels_last is None:
        if t.shape[0] == 3 and t.shape[-1] == 3:
            raise ValueError("image shape (3, H, 3) is ambiguous; pass channels_last")
        channels_last = t.shape[-1] == 3
    return t.permute(2, 0, 1) if channels_last else t


def warp_crops(
    images: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
    centers: ArrayLike,
    scales: ArrayLike,
    output_size: Sequence[int],
    rotations: ArrayLike | float = 0.0,
    image_index: ArrayLike | None = None,
    *,
    device: torch.device | str | None = None,
    channels_last: bool | None = None,
    bgr: bool = False,
    normalize: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    quantize: bool | None = None,
) -> torch.Tensor:
    """Crop many boxes at once on the device: ``(N, 3, h, w)`` float32 for ``output_size=(w, h)``.

    Equivalent to the official ``cv2.warpAffine(img, get_affine_transform(c, s, r, size), size,
    flags=cv2.INTER_LINEAR)`` with a constant 0 border, done as one ``grid_sample`` (bilinear,
    zero padding, ``align_corners=True`` so pixel centres map onto pixel centres) over all images.

    - ``images``: one image or a list of them (sizes may differ), ``(H, W, 3)`` or ``(3, H, W)``,
      uint8 or float (0-255 scale), numpy or torch on any device. ``channels_last`` settles
      ``(3, H, 3)``.
    - ``image_index``: the image of each box (needed with several images; default all 0).
    - ``bgr``: the channels are BGR (``cv2.imread``) and are reversed to RGB.
    - ``quantize``: round (half to even) to whole grey levels as OpenCV's uint8 output does
      (default: when the input is uint8). OpenCV 5 samples at exact float positions like this
      function, so the crops agree with it except at near-ties of the rounding (<= 1 level);
      OpenCV 4.x samples at 1/32-pixel fixed-point positions and differs from both by a few
      levels where the image has sharp edges (<= 2 on the reference fixture).
    - ``normalize``: divide by 255 and apply ``(x - mean) / std`` per RGB channel (ImageNet
      defaults), as the official ``ToTensor`` + ``Normalize``: the result is model-ready.
    - ``device``: where to compute (default: the images' device).
    """
    imgs = list(images) if isinstance(images, (list, tuple)) else [images]
    if not imgs:
        raise ValueError("warp_crops needs at least one image")
    chw = [_as_chw(im, channels_last) for im in imgs]
    dev = torch.device(device) if device is not None else chw[0].device
    if quantize is None:
        quantize = chw[0].dtype == torch.uint8
    out_w, out_h = (int(v) for v in output_size)
    mats = affine_matrices(centers, scales, (out_w, out_h), rotations, inv=True)  # crop -> image
    n = mats.shape[0]
    idx = np.zeros(n, np.int64) if image_index is None else _np(image_index, np.int64).reshape(n)
    if n and (idx.min() < 0 or idx.max() >= len(chw)):
        raise ValueError(f"image_index must lie in [0, {len(chw)}), got {idx.min()}..{idx.max()}")
    if n == 0:
        return torch.zeros((0, 3, out_h, out_w), dtype=torch.float32, device=dev)

    # All images in one batch, zero-padded to a common size: the padding reads as the 0 border.
    height = max(2, max(t.shape[1] for t in chw))
    width = max(2, max(t.shape[2] for t in chw))
    if all(t.shape[1:] == (height, width) for t in chw):
        batch = torch.stack([t.to(dev, torch.float32, non_blocking=True) for t in chw])
    else:
        batch = torch.zeros((len(chw), 3, height, width), dtype=torch.float32, device=dev)
        for i, t in enumerate(chw):
            batch[i, :, : t.shape[1], : t.shape[2]] = t.to(dev, non_blocking=True)
    if bgr:
        batch = batch.flip(1)

    # theta maps normalised crop coordinates to normalised image coordinates (align_corners=True).
    to_norm = np.array([[2.0 / (width - 1), 0, -1], [0, 2.0 / (height - 1), -1], [0, 0, 1]])
    hw, hh = (out_w - 1) / 2, (out_h - 1) / 2
    from_norm = np.array([[hw, 0, hw], [0, hh, hh], [0, 0, 1]])
    theta = to_norm[:2] @ np.concatenate([mats, np.tile([[[0, 0, 1]]], (n, 1, 1))], 1) @ from_norm
    grid = F.affine_grid(
        torch.as_tensor(theta, dtype=torch.float64, device=dev),
        [n, 3, out_h, out_w], align_corners=True,
    ).to(torch.float32)

    # Group boxes by image: grid (n_images, slots * h, w, 2); empty slots sample far outside.
    counts = np.bincount(idx, minlength=len(chw))
    order = np.argsort(idx, kind="stable")
    slot = np.empty(n, np.int64)
    slot[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    slots = int(counts.max())
    img_t = torch.as_tensor(idx, device=dev)
    slot_t = torch.as_tensor(slot, device=dev)
    grouped = torch.full((len(chw), slots, out_h, out_w, 2), -4.0, device=dev)
    grouped[img_t, slot_t] = grid
    sampled = F.grid_sample(
        batch, grouped.view(len(chw), slots * out_h, out_w, 2),
        mode="bilinear", padding_mode="zeros", align_corners=True,
    )
    crops = sampled.view(len(chw), 3, slots, out_h, out_w).permute(0, 2, 1, 3, 4)[img_t, slot_t]
    if quantize:
        crops = torch.round(crops).clamp_(0, 255)
    if normalize:
        m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        crops = (crops / 255.0 - m) / s
    return crops.contiguous()
