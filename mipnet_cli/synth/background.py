"""Cluttered backgrounds and distractor shapes (drawn behind or in front of people)."""

from __future__ import annotations

import cv2
import numpy as np


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float,
                  gain: np.ndarray | None = None) -> np.ndarray:
    """Low-frequency noise in [-1, 1] with features about `cell` pixels wide; with `gain`
    (one value per channel) an (H, W, C) image of the same noise scaled per channel."""
    gh, gw = max(2, int(height / cell) + 2), max(2, int(width / cell) + 2)
    grid = rng.uniform(-1, 1, (gh, gw, 1)).astype(np.float32)
    if gain is not None:
        grid = grid * gain
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A random colour pulled part of the way towards grey (scenes are rarely saturated)."""
    c = rng.uniform(0, 255, 3)
    grey = c.mean()
    return (grey + rng.uniform(0.3, 1.0) * (c - grey)).astype(np.float32)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB uint8 background: gradient or wall/floor, textured noise, and clutter shapes."""
    c0, c1 = _muted(rng), _muted(rng)
    if rng.random() < 0.5:  # linear gradient in a random direction
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * np.array([[0, 1], [0, 1]]) + np.sin(a) * np.array([[0, 0], [1, 1]])
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        corners = (c0 + (c1 - c0) * t[:, :, None]).astype(np.float32)
        img = cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR)
    else:  # wall and floor split at a horizon
        ys = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        horizon = rng.uniform(0.3, 0.7)
        floor = _muted(rng) * np.float32(0.8)
        rows = np.where(ys < horizon, c0 + (c1 - c0) * ys,
                        floor * (np.float32(0.7) + np.float32(0.5) * (ys - horizon)))
        img = cv2.resize(rows.astype(np.float32), (width, height),
                         interpolation=cv2.INTER_NEAREST)
    for _ in range(int(rng.integers(1, 4))):  # a few octaves of texture
        cell = float(rng.uniform(4, max(8.0, min(height, width) / 3)))
        gain = (rng.uniform(5, 40) * rng.uniform(0.5, 1.0, 3)).astype(np.float32)
        img += _smooth_noise(rng, height, width, cell, gain)
    img = np.clip(img, 0, 255, out=img).astype(np.uint8)
    clutter(rng, img, int(rng.integers(3, 25)))
    return img


def clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    """Draw random rectangles, ellipses, polygons, lines, limb-like strokes and text (in place)."""
    h, w = img.shape[:2]
    size = min(h, w)
    for _ in range(count):
        colour = tuple(float(v) for v in _random_colour(rng))
        kind = rng.choice(7, p=[0.2, 0.2, 0.17, 0.15, 0.13, 0.07, 0.08])
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        s = int(rng.uniform(0.03, 0.35) * size) + 2
        if kind == 0:
            cv2.rectangle(img, (cx, cy), (cx + s, cy + int(s * rng.uniform(0.3, 3))), colour, -1)
        elif kind == 1:
            cv2.ellipse(img, (cx, cy), (s // 2 + 1, int(s * rng.uniform(0.2, 1)) + 1),
                        float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        elif kind == 2:
            pts = np.column_stack([cx + rng.normal(0, s / 2, 5), cy + rng.normal(0, s / 2, 5)])
            cv2.fillPoly(img, [pts.astype(np.int32)], colour, cv2.LINE_AA)
        elif kind == 3:
            end = (cx + int(rng.normal(0, s)), cy + int(rng.normal(0, s)))
            cv2.line(img, (cx, cy), end, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 4:  # a limb-like stroke in a skin tone: a hard negative for the network
            tone = np.array([230.0, 190, 160]) * rng.uniform(0.4, 1.05)
            end = (cx + int(rng.normal(0, s)), cy + int(rng.normal(0, s)))
            cv2.line(img, (cx, cy), end, tuple(float(v) for v in tone),
                     max(2, s // 6), cv2.LINE_AA)
        elif kind == 5:  # grid of windows / tiles
            step = max(4, s // 3)
            for gx in range(cx, min(w, cx + 2 * s), step):
                for gy in range(cy, min(h, cy + 2 * s), step):
                    cv2.rectangle(img, (gx, gy), (gx + step // 2, gy + step // 2), colour, -1)
        else:
            text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 7))))
            cv2.putText(img, text, (cx, cy), cv2.FONT_HERSHEY_SIMPLEX, s / 150 + 0.3, colour,
                        max(1, s // 80), cv2.LINE_AA)


def foreground_distractor(rng: np.random.Generator, height: int, width: int,
                          person_px: float) -> tuple[np.ndarray, np.ndarray]:
    """A shape that stands in front of people (pole, sign, bag, box, foliage).

    Returns the boolean mask and an RGB colour patch of the full image size.
    """
    mask = np.zeros((height, width), np.uint8)
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0.2, 1.0) * height)
    kind = rng.integers(4)
    if kind == 0:  # pole, maybe with a sign
        half = max(1.5, person_px * rng.uniform(0.015, 0.04))
        cv2.rectangle(mask, (int(cx - half), int(cy - person_px * rng.uniform(0.6, 1.5))),
                      (int(cx + half), height), 1, -1)
        if rng.random() < 0.5:
            sw = person_px * rng.uniform(0.1, 0.25)
            top = int(cy - person_px * rng.uniform(0.6, 1.2))
            cv2.rectangle(mask, (int(cx - sw), top), (int(cx + sw), int(top + sw * 1.2)), 1, -1)
    elif kind == 1:  # box or bag
        bw, bh = person_px * rng.uniform(0.12, 0.4, 2)
        cv2.rectangle(mask, (int(cx - bw / 2), int(cy - bh)), (int(cx + bw / 2), int(cy)), 1, -1)
    elif kind == 2:  # ball or balloon
        cv2.circle(mask, (int(cx), int(cy)), max(2, int(person_px * rng.uniform(0.05, 0.15))), 1,
                   -1, cv2.LINE_8)
    else:  # foliage: a noisy blob
        r = person_px * rng.uniform(0.1, 0.3)
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        rad = r * rng.uniform(0.6, 1.2, 24)
        pts = np.column_stack([cx + rad * np.cos(t), cy + rad * np.sin(t)]).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    ys, xs = np.nonzero(mask)
    patch = np.zeros((height, width, 3), np.uint8)
    if len(xs):
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        noise = _smooth_noise(rng, y1 - y0, x1 - x0, max(3.0, person_px / 20))
        colour = _random_colour(rng).astype(np.float32)
        patch[y0:y1, x0:x1] = np.clip(colour + np.float32(rng.uniform(5, 30)) * noise[:, :, None],
                                      0, 255)
    return mask.astype(bool), patch
