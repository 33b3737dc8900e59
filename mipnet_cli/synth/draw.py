"""Drawing one posed figure: clothing, textures, shaded head with face, and a part map.

A figure is drawn into a window of the image as a part map (which body part covers each pixel,
painted back to front by part depth) and a colour patch; the scene composites windows.
Coordinates follow COCO: pixel (i, j) covers [i, i+1) x [j, j+1), so a keypoint at (x, y)
lies on pixel (floor(x), floor(y)).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

from .body import FACE_NORMALS, HEAD, L_HAND, L_TOE, NECK, PELVIS, Figure

(TORSO, PANTS, SKIRT, NECK_PART, HEAD_PART, L_EAR, R_EAR, HAIR, L_UARM, R_UARM, L_FARM, R_FARM,
 L_HAND_PART, R_HAND_PART, L_THIGH, R_THIGH, L_SHIN, R_SHIN, L_FOOT, R_FOOT, L_SLEEVE, R_SLEEVE,
 L_SHORTS, R_SHORTS) = range(1, 25)
NUM_PARTS = 25  # part ids 1..24; 0 means no part

# Parts that carry each COCO keypoint: a keypoint whose pixel shows one of them is visible.
KEYPOINT_PARTS: tuple[frozenset[int], ...] = (
    frozenset({HEAD_PART}), frozenset({HEAD_PART}), frozenset({HEAD_PART}),
    frozenset({HEAD_PART, L_EAR}), frozenset({HEAD_PART, R_EAR}),
    frozenset({L_UARM, L_SLEEVE}), frozenset({R_UARM, R_SLEEVE}),
    frozenset({L_UARM, L_FARM, L_SLEEVE}), frozenset({R_UARM, R_FARM, R_SLEEVE}),
    frozenset({L_FARM, L_HAND_PART}), frozenset({R_FARM, R_HAND_PART}),
    frozenset({L_THIGH, L_SHORTS}), frozenset({R_THIGH, R_SHORTS}),
    frozenset({L_THIGH, L_SHIN, L_SHORTS}), frozenset({R_THIGH, R_SHIN, R_SHORTS}),
    frozenset({L_SHIN, L_FOOT}), frozenset({R_SHIN, R_FOOT}),
)

TRUNK_PARTS = frozenset({TORSO, PANTS, SKIRT})

SKIN, HAIR_MAT, SHIRT, LEGWEAR, SHOES, HAT = range(6)
_LIGHT = np.array([-0.35, -0.55, 0.75]) / np.linalg.norm([-0.35, -0.55, 0.75])


@dataclass
class Cloth:
    """A clothing material: colours and a pattern (plain, stripes, checks or noise)."""

    colour: np.ndarray  # RGB float 0-255
    colour2: np.ndarray
    pattern: str
    period: float  # pattern period in body heights
    angle: float
    seed: int  # the noise pattern's seed, so a person looks the same in every video frame


@dataclass
class Appearance:
    """Everything about how a person looks apart from the pose."""

    skin: np.ndarray
    hair: np.ndarray
    hair_style: str  # short | long | bald | hat
    hat: np.ndarray
    shirt: Cloth
    sleeves: int  # 0 none, 1 short, 2 long
    legwear: str  # pants | shorts | skirt
    pants: Cloth
    shoes: np.ndarray


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


_PANTS_COLOURS = np.array([[58, 78, 120], [35, 35, 40], [110, 110, 115], [170, 150, 110],
                           [40, 50, 80], [225, 225, 220], [90, 60, 45]], dtype=np.float64)


def _sample_cloth(rng: np.random.Generator, palette: np.ndarray | None = None) -> Cloth:
    if palette is not None and rng.random() < 0.55:
        colour = palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.15)
    else:
        colour = _hsv(rng.random(), rng.uniform(0.05, 0.9), rng.uniform(0.12, 0.95))
    colour2 = _hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.1, 1.0))
    pattern = str(rng.choice(["plain", "stripes", "checks", "noise"], p=[0.5, 0.22, 0.1, 0.18]))
    return Cloth(np.clip(colour, 0, 255), colour2, pattern, float(rng.uniform(0.02, 0.07)),
                 float(rng.uniform(0, np.pi)) if rng.random() < 0.3 else np.pi / 2,
                 int(rng.integers(2**31)))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Random skin tone, hair, clothing colours and textures."""
    t = rng.beta(1.3, 1.3)
    skin = (1 - t) * np.array([240.0, 205, 180]) + t * np.array([85.0, 55, 40])
    skin = np.clip(skin * rng.uniform(0.92, 1.06, 3), 0, 255)
    hair_palette = np.array([[25, 20, 18], [60, 40, 25], [110, 75, 40], [190, 160, 100],
                             [150, 150, 150], [140, 60, 30]], dtype=np.float64)
    hair = hair_palette[rng.choice(6, p=[0.35, 0.25, 0.15, 0.1, 0.1, 0.05])]
    hair = hair * rng.uniform(0.85, 1.1)
    legwear = str(rng.choice(["pants", "shorts", "skirt"], p=[0.68, 0.2, 0.12]))
    return Appearance(
        skin=skin, hair=np.clip(hair, 0, 255),
        hair_style=str(rng.choice(["short", "long", "bald", "hat"], p=[0.5, 0.3, 0.07, 0.13])),
        hat=_hsv(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)),
        shirt=_sample_cloth(rng),
        sleeves=int(rng.choice(3, p=[0.12, 0.4, 0.48])),
        legwear=legwear,
        pants=_sample_cloth(rng, _PANTS_COLOURS),
        shoes=_hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.05, 0.6)),
    )


_UNIT_CIRCLE = np.column_stack([np.cos(np.arange(12) * np.pi / 6),
                                np.sin(np.arange(12) * np.pi / 6)])
_ELLIPSE_T = np.linspace(0, 2 * np.pi, 24, endpoint=False)


def _circle(c: np.ndarray, r: float) -> np.ndarray:
    return c + r * _UNIT_CIRCLE


def _pixel_square(xy: np.ndarray) -> np.ndarray:
    """Corners (slightly inset) of the pixel that holds xy, so a hull through them paints it."""
    base = np.floor(xy)
    return base + np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])


@dataclass
class _Part:
    pid: int
    polygon: np.ndarray  # (N, 2) image coordinates
    depth: float  # relative depth (see keypoint_depths), painting order and occlusion tests


@dataclass
class DrawnFigure:
    """A figure drawn into the window [x0, x0 + w) x [y0, y0 + h) of the image."""

    x0: int
    y0: int
    parts: np.ndarray  # (h, w) uint8 part ids, 0 where the figure is absent
    colour: np.ndarray  # (h, w, 3) uint8 RGB
    part_depth: np.ndarray  # (NUM_PARTS,) relative depth of each part


# Depth reference of each keypoint: 0 the shoulders' centre, 1 the hips' centre, 2 the neck.
_KEYPOINT_REF = np.array([2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])


def _references(p: np.ndarray) -> np.ndarray:
    return np.array([(p[5, 2] + p[6, 2]) / 2, (p[11, 2] + p[12, 2]) / 2, p[NECK, 2]])


def keypoint_depths(fig: Figure) -> np.ndarray:
    """Depths of the 17 keypoints relative to the trunk point they hang from.

    A single depth for the whole trunk would put a forward-leaning chest in front of arms that
    hang beside it; measured from its girdle, a limb is in front of the trunk (depth > 0),
    beside it (about 0) or behind it (< 0) whatever the trunk does. Parts use the same scale.
    """
    return fig.points[:17, 2] - _references(fig.points)[_KEYPOINT_REF]


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _build_parts(fig: Figure, look: Appearance) -> list[_Part]:
    """Every part's outline and relative depth, with keypoint pixels inside their own parts.

    Depth biases (in body heights) settle ties: arms over the trunk, trunk over thighs,
    clothing over the limb it covers, head over neck over trunk.
    """
    p, s, prop = fig.points, fig.scale, fig.prop
    g = prop.girth
    lg = g ** 0.6
    rmin = 1.2
    ref = _references(p)
    parts: list[_Part] = []

    def capsule(pid: int, a: np.ndarray, b: np.ndarray, ra: float, rb: float, group: int,
                anchors: tuple[int, ...] = (), bias: float = 0.0, depth: float | None = None
                ) -> float:
        ra, rb = max(ra * s, rmin), max(rb * s, rmin)
        pts = [_circle(a[:2], ra), _circle(b[:2], rb)]
        pts += [_pixel_square(p[k, :2]) for k in anchors]
        d = float((a[2] + b[2]) / 2 - ref[group]) + bias * s if depth is None else depth
        parts.append(_Part(pid, _hull(np.concatenate(pts)), d))
        return d

    # Chest axes in camera coordinates (left, up, forward form a right-handed frame here).
    left = p[5] - p[6]
    left /= max(np.linalg.norm(left), 1e-9)
    up = p[NECK] - p[PELVIS]
    up /= max(np.linalg.norm(up), 1e-9)
    fwd = np.cross(up, left)
    fwd /= max(np.linalg.norm(fwd), 1e-9)
    hip_left = p[11] - p[12]
    hip_left /= max(np.linalg.norm(hip_left), 1e-9)
    depth_vec = fwd * 0.065 * g * s

    def slab(points3d: list[np.ndarray]) -> np.ndarray:
        pts = np.array(points3d)
        return np.concatenate([pts + depth_vec, pts - depth_vec])[:, :2]

    sh_out = 0.03 * lg * s
    waist = [p[5] + 0.68 * (p[11] - p[5]) + left * 0.005 * g * s,
             p[6] + 0.68 * (p[12] - p[6]) - left * 0.005 * g * s]
    hips_out = [p[11] + hip_left * 0.04 * g * s, p[12] - hip_left * 0.04 * g * s]
    chest3d = [p[5] + left * sh_out, p[6] - left * sh_out, p[NECK] + up * 0.01 * s, *waist]
    chest = _hull(np.concatenate([slab(chest3d), _pixel_square(p[NECK, :2])]))
    parts.append(_Part(TORSO, chest, 0.0))
    parts.append(_Part(TORSO, _hull(slab(waist + hips_out)), 0.0))
    belt = [p[5 + i] + 0.8 * (p[11 + i] - p[5 + i]) for i in (0, 1)]
    parts.append(_Part(PANTS, _hull(slab(belt + hips_out)), 0.001 * s))
    if look.legwear == "skirt":
        # The skirt hangs along the trunk whatever the legs do.
        length = 0.7 * prop.thigh * s
        flare = [p[11] - up * length + hip_left * 0.09 * g * s,
                 p[12] - up * length - hip_left * 0.09 * g * s]
        parts.append(_Part(SKIRT, _hull(slab(waist + hips_out + flare)), 0.003 * s))
    capsule(NECK_PART, p[NECK], p[HEAD], 0.03 * lg, 0.027 * lg, 2, depth=0.002 * s)

    # Head: an ellipse, slightly longer along the head's projected up axis.
    r = max(prop.head_r * s, 2.0)
    up2 = fig.head_axes[:2, 1]
    n2 = np.linalg.norm(up2)
    up2 = up2 / n2 if n2 > 1e-6 else np.array([0.0, -1.0])
    lat2 = np.array([-up2[1], up2[0]])
    t = _ELLIPSE_T
    ell = p[HEAD, :2] + np.outer(np.cos(t) * r, lat2) + np.outer(np.sin(t) * 1.1 * r, up2)
    face_px = [_pixel_square(p[k, :2]) for k in range(3)]
    head_depth = max(float(p[HEAD, 2] - ref[2]), 0.0) + 0.004 * s
    parts.append(_Part(HEAD_PART, _hull(np.concatenate([ell, *face_px])), head_depth))
    for k, pid in ((3, L_EAR), (4, R_EAR)):
        capsule(pid, p[k], p[k], 0.22 * prop.head_r, 0.22 * prop.head_r, 2, anchors=(k,),
                bias=0.004)
    if look.hair_style == "long":
        hf = fig.head_axes[:, 2]
        top = p[HEAD] - hf * 0.35 * r
        bottom = p[HEAD] - fig.head_axes[:, 1] * 2.0 * r - hf * 0.45 * r
        capsule(HAIR, top, bottom, 0.95 * prop.head_r, 0.75 * prop.head_r, 2)

    sleeve_len = {0: 0.0, 1: 0.55, 2: 0.0}[look.sleeves]
    for i in (0, 1):
        sh, el, wr, hand = p[5 + i], p[7 + i], p[9 + i], p[L_HAND + i]
        d_upper = capsule(L_UARM + i, sh, el, 0.036 * lg, 0.027 * lg, 0, (5 + i, 7 + i), 0.006)
        capsule(L_FARM + i, el, wr, 0.027 * lg, 0.02 * lg, 0, (7 + i, 9 + i), 0.007)
        capsule(L_HAND_PART + i, wr, hand, 0.022, 0.019, 0, (9 + i,), 0.008)
        if sleeve_len:
            end = sh + sleeve_len * (el - sh)
            capsule(L_SLEEVE + i, sh, end, 0.042 * lg, 0.036 * lg, 0, (5 + i,),
                    depth=d_upper + 0.0005 * s)
        hip, knee, ank, toe = p[11 + i], p[13 + i], p[15 + i], p[L_TOE + i]
        d_thigh = capsule(L_THIGH + i, hip, knee, 0.055 * lg, 0.036 * lg, 1, (11 + i, 13 + i),
                          -0.002)
        capsule(L_SHIN + i, knee, ank, 0.036 * lg, 0.024 * lg, 1, (13 + i, 15 + i), -0.001)
        capsule(L_FOOT + i, ank, toe, 0.026, 0.02, 1, (15 + i,), -0.0005)
        if look.legwear == "shorts":
            end = hip + 0.5 * (knee - hip)
            capsule(L_SHORTS + i, hip, end, 0.06 * lg, 0.045 * lg, 1, (11 + i,),
                    depth=d_thigh + 0.0005 * s)
    return parts


def _material_of(look: Appearance) -> np.ndarray:
    """Part id -> material index."""
    mat = np.full(NUM_PARTS, SKIN, dtype=np.int64)
    mat[[TORSO, L_SLEEVE, R_SLEEVE]] = SHIRT
    if look.sleeves == 2:
        mat[[L_UARM, R_UARM, L_FARM, R_FARM]] = SHIRT
    mat[[PANTS, SKIRT, L_SHORTS, R_SHORTS]] = LEGWEAR
    if look.legwear == "pants":
        mat[[L_THIGH, R_THIGH, L_SHIN, R_SHIN]] = LEGWEAR
    mat[[L_FOOT, R_FOOT]] = SHOES
    mat[HAIR] = HAIR_MAT
    return mat


_NOISE_CELLS = 160  # side of a cloth's noise pattern, in pattern cells


def _texture(cloth: Cloth, xs: np.ndarray, ys: np.ndarray, scale: float) -> np.ndarray:
    """Colours (N, 3) of a cloth at pixels (xs, ys), given relative to the body's pelvis."""
    base = np.broadcast_to(cloth.colour, (len(xs), 3)).astype(np.float64)
    period = max(cloth.period * scale, 3.0)
    u = (xs * np.cos(cloth.angle) + ys * np.sin(cloth.angle)) / period
    if cloth.pattern == "stripes":
        return np.where((np.floor(u) % 2 == 0)[:, None], base, cloth.colour2)
    if cloth.pattern == "checks":
        v = (-xs * np.sin(cloth.angle) + ys * np.cos(cloth.angle)) / period
        odd = (np.floor(u) + np.floor(v)) % 2 == 0
        return np.where(odd[:, None], base, 0.6 * base + 0.4 * cloth.colour2)
    if cloth.pattern == "noise":
        cell = max(period / 2, 2.0)
        grid = np.random.default_rng(cloth.seed).normal(1.0, 0.18, (_NOISE_CELLS, _NOISE_CELLS))
        half = _NOISE_CELLS // 2
        gx = np.clip(np.floor(xs / cell).astype(np.int64) + half, 0, _NOISE_CELLS - 1)
        gy = np.clip(np.floor(ys / cell).astype(np.int64) + half, 0, _NOISE_CELLS - 1)
        return base * grid[gy, gx][:, None]
    return base


def draw_figure(fig: Figure, look: Appearance, width: int, height: int) -> DrawnFigure | None:
    """Draw a figure clipped to a width x height image; None when it falls outside."""
    parts = _build_parts(fig, look)
    allpts = np.concatenate([q.polygon for q in parts])
    x0, y0 = np.floor(allpts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(allpts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    h, w = y1 - y0, x1 - x0
    pm = np.zeros((h, w), np.uint8)
    depth = np.zeros(NUM_PARTS, np.float32)
    offset = np.array([x0 + 0.5, y0 + 0.5])  # pixel centres sit at integer cv2 coordinates
    for part in sorted(parts, key=lambda q: q.depth):
        poly = np.round((part.polygon - offset) * 16).astype(np.int32)
        cv2.fillConvexPoly(pm, poly, int(part.pid), lineType=cv2.LINE_8, shift=4)
        depth[part.pid] = part.depth
    ys, xs = np.nonzero(pm)
    if len(xs) == 0:
        return None
    pid = pm[ys, xs]
    mat = _material_of(look)[pid]
    gx, gy = xs + x0 + 0.5, ys + y0 + 0.5
    rx, ry = gx - fig.points[PELVIS, 0], gy - fig.points[PELVIS, 1]
    col = np.empty((len(xs), 3))
    flat = {SKIN: look.skin, HAIR_MAT: look.hair, SHOES: look.shoes}
    for m, c in flat.items():
        col[mat == m] = c
    for m, cloth in ((SHIRT, look.shirt), (LEGWEAR, look.pants)):
        sel = mat == m
        if sel.any():
            col[sel] = _texture(cloth, rx[sel], ry[sel], fig.scale)
    col[(pid == L_EAR) | (pid == R_EAR)] *= 0.9

    # Far parts a little darker so overlapping limbs of one colour stay apart.
    dmax = depth[np.unique(pid)].max()
    col *= (1.0 - 0.22 * np.clip((dmax - depth[pid]) / (0.12 * fig.scale), 0, 1))[:, None]
    _shade_head(fig, look, pm, col, xs, ys, gx, gy, x0, y0)

    colour = np.zeros((h, w, 3), np.float32)
    colour[ys, xs] = col
    # Soft dark outlines along part boundaries give the figure a rounded, drawn look.
    edge = np.zeros((h, w), np.float32)
    edge[:, 1:] += pm[:, 1:] != pm[:, :-1]
    edge[:, :-1] += pm[:, 1:] != pm[:, :-1]
    edge[1:] += pm[1:] != pm[:-1]
    edge[:-1] += pm[1:] != pm[:-1]
    sigma = max(0.6, 0.006 * fig.scale)
    edge = cv2.GaussianBlur(np.minimum(edge, 1.0), (0, 0), sigma)
    colour *= (1.0 - 0.5 * np.clip(edge * 1.6, 0, 1))[:, :, None]
    return DrawnFigure(int(x0), int(y0), pm, np.clip(colour, 0, 255).astype(np.uint8), depth)


def _shade_head(fig: Figure, look: Appearance, pm: np.ndarray, col: np.ndarray,
                xs: np.ndarray, ys: np.ndarray, gx: np.ndarray, gy: np.ndarray,
                x0: int, y0: int) -> None:
    """Per-pixel sphere shading, hair or hat, eyes and mouth on the head pixels (in place)."""
    sel = pm[ys, xs] == HEAD_PART
    if not sel.any():
        return
    p = fig.points
    r = max(fig.prop.head_r * fig.scale, 2.0)
    up2 = fig.head_axes[:2, 1]
    n2 = np.linalg.norm(up2)
    up2 = up2 / n2 if n2 > 1e-6 else np.array([0.0, -1.0])
    lat2 = np.array([-up2[1], up2[0]])
    ox, oy = gx[sel] - p[HEAD, 0], gy[sel] - p[HEAD, 1]
    a = (ox * lat2[0] + oy * lat2[1]) / r
    b = (ox * up2[0] + oy * up2[1]) / (1.1 * r)
    nz = np.sqrt(np.clip(1 - a * a - b * b, 0, 1))
    normal = np.outer(a, [*lat2, 0]) + np.outer(b, [*up2, 0]) + np.outer(nz, [0, 0, 1])
    hu = normal @ fig.head_axes[:, 1]
    hf = normal @ fig.head_axes[:, 2]
    style = look.hair_style
    if style == "long":
        hair = (hu > 0.18) | (hf < 0.05)
    elif style == "bald":
        hair = (hf < -0.35) & (hu < 0.25) & (hu > -0.4)
    else:
        hair = (hu > 0.32) | ((hf < -0.2) & (hu > -0.6))
    c = np.where(hair[:, None], look.hair, look.skin)
    if style == "hat":
        c = np.where((hu > 0.38)[:, None], look.hat, c)
    light = 0.55 + 0.5 * np.clip(normal @ _LIGHT, 0, 1)
    col[sel] = c * light[:, None]

    # Eyes and mouth where they face the camera.
    feat = np.zeros(pm.shape, np.uint8)
    origin = np.array([x0 + 0.5, y0 + 0.5])
    eye_r = max(0.13 * r, 0.7)
    for k in (1, 2):
        n_cam = fig.head_axes @ FACE_NORMALS[k]
        if n_cam[2] > 0.25:
            c2 = np.round((p[k, :2] - origin) * 16).astype(np.int32)
            cv2.circle(feat, tuple(int(v) for v in c2), int(round(eye_r * 16)), 1, -1,
                       cv2.LINE_8, 4)
    mouth = fig.head_axes @ np.array([0.0, -0.55, 0.8])
    if mouth[2] > 0.45:
        m2 = p[HEAD, :2] + mouth[:2] * r - origin
        half = fig.head_axes[:2, 0] * 0.22 * r
        a2 = np.round((m2 - half) * 16).astype(np.int32)
        b2 = np.round((m2 + half) * 16).astype(np.int32)
        cv2.line(feat, tuple(int(v) for v in a2), tuple(int(v) for v in b2), 2,
                 max(1, int(round(0.06 * r))), cv2.LINE_8, 4)
    f = feat[ys[sel], xs[sel]]
    head_cols = col[sel]
    head_cols[f == 1] = [35, 28, 25]
    head_cols[f == 2] = look.skin * np.array([0.55, 0.35, 0.35])
    col[sel] = head_cols
