"""Scratches, holes and swirl deformations with exact masks: the ``defects`` strategy
(registered in :mod:`pagmfr.anomalies.strategies`) that validation uses by default. (The
embedded dataset's test defects are another family: :mod:`pagmfr.data.test_defects`.)

A family no training generator produces (those blend Perlin-masked textures or paste object
cut-outs), so choosing the best epoch on it measures every generator variant against the same
yardstick, and a variant is not favoured for resembling the validation anomalies.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage

from pagmfr.categories import OBJECT

DEFECT_TYPES = ("scratch", "hole", "deformation")
#: A drawn defect is kept when it changed at least this many pixels and half of its region.
MIN_CHANGED_PIXELS = 4
#: Draws before the contrasting fallback: on a flat image a swirl moves nothing, dark paint on
#: black changes nothing, and a tiny image's hole is under four pixels, however often drawn.
MAX_DRAWS = 20

#: ``painter(image, rng, centre) -> (painted image, bool region)``
Painter = Callable[[np.ndarray, np.random.Generator, np.ndarray], tuple[np.ndarray, np.ndarray]]


def defect_centre(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """Objects get defects near the centre, where the object is; textures anywhere."""
    if kind == OBJECT:
        radius = 0.22 * size * np.sqrt(rng.uniform())
        theta = rng.uniform(0, 2 * np.pi)
        return size / 2 + radius * np.array([np.cos(theta), np.sin(theta)])
    return rng.uniform(0.15 * size, 0.85 * size, size=2)


def _scratch(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray) -> tuple:
    size = image.shape[0]
    steps = rng.integers(3, 6)
    heading = rng.uniform(0, 2 * np.pi)
    points = [centre]
    for _ in range(steps):
        heading += rng.uniform(-0.5, 0.5)
        points.append(
            points[-1]
            + rng.uniform(0.05, 0.1) * size * np.array([np.cos(heading), np.sin(heading)])
        )
    mask = np.zeros(image.shape[:2], np.uint8)
    thickness = max(1, size // 100)
    cv2.polylines(mask, [np.rint(points).astype(np.int32)], False, 1, thickness, cv2.LINE_8)
    colour = rng.uniform(15, 60) if rng.uniform() < 0.5 else rng.uniform(200, 245)
    painted = np.clip(colour + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return painted, mask.astype(bool)


def _hole(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray) -> tuple:
    size = image.shape[0]
    axes = rng.uniform(0.04, 0.09, size=2) * size
    mask = np.zeros(image.shape[:2], np.uint8)
    box = (
        (float(centre[0]), float(centre[1])),
        (float(2 * axes[0]), float(2 * axes[1])),
        rng.uniform(0, 180),
    )
    cv2.ellipse(mask, box, 1, -1)
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    depth = np.hypot(xs - centre[0], ys - centre[1]) / max(axes)
    shade = 8 + 40 * np.clip(depth, 0, 1)[..., None]
    painted = np.clip(shade * np.array([1.0, 0.9, 0.8]) + rng.normal(0, 3, image.shape), 0, 255)
    return painted.astype(np.uint8), mask.astype(bool)


def _deformation(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray) -> tuple:
    """A local swirl; the mask is the region where pixels moved by at least one pixel."""
    size = image.shape[0]
    radius = rng.uniform(0.08, 0.14) * size
    strength = rng.uniform(2.0, 3.5) * rng.choice([-1, 1])
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    dx, dy = xs - centre[0], ys - centre[1]
    falloff = np.clip(1 - np.hypot(dx, dy) / radius, 0, 1) ** 2
    angle = strength * falloff
    cos, sin = np.cos(angle), np.sin(angle)
    map_x = (centre[0] + cos * dx - sin * dy).astype(np.float32)
    map_y = (centre[1] + sin * dx + cos * dy).astype(np.float32)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    moved = np.hypot(map_x - xs, map_y - ys) >= 1.0
    return warped, ndimage.binary_fill_holes(moved)  # the swirl's still centre is inside it


DEFECT_PAINTERS = {"scratch": _scratch, "hole": _hole, "deformation": _deformation}


def add_defect(
    image: np.ndarray, defect: str, rng: np.random.Generator, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect (see :func:`paint_visible`)."""
    return paint_visible(image, DEFECT_PAINTERS[defect], rng, kind)


def paint_visible(
    image: np.ndarray, painter: Painter, rng: np.random.Generator, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect on a uint8 (H, W, 3) image. The mask is the painted region: pixels
    outside it are unchanged, and at least half inside it changed. A draw that changes fewer
    is drawn again, at most :data:`MAX_DRAWS` times; then the last region (or a small square
    at its centre, when it is too small) gets the :func:`contrasting` fill, so an image no
    painter can change (flat, black, tiny) still gets a visible defect and never hangs."""
    for _ in range(MAX_DRAWS):
        centre = defect_centre(rng, image.shape[0], kind)
        painted, region = painter(image, rng, centre)
        out = np.where(region[..., None], painted, image)
        changed = np.count_nonzero(np.any(out != image, axis=2))
        if changed >= max(MIN_CHANGED_PIXELS, 0.5 * np.count_nonzero(region)):
            return out, region
    region = _large_enough(region, centre)
    return np.where(region[..., None], contrasting(image), image), region


def contrasting(image: np.ndarray) -> np.ndarray:
    """Every channel of every pixel changed as far as it goes: 0 where it is bright, 255
    where it is dark (the fallback defect, visible on any image)."""
    return np.where(image >= 128, 0, 255).astype(np.uint8)


def _large_enough(region: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``region``, or when it has fewer than :data:`MIN_CHANGED_PIXELS` (a tiny image's
    defect) the smallest square holding that many, or H / 8 wide, around ``centre``, kept
    inside the image."""
    if np.count_nonzero(region) >= MIN_CHANGED_PIXELS:
        return region
    height, width = region.shape
    side = min(max(math.ceil(math.sqrt(MIN_CHANGED_PIXELS)), height // 8), height, width)
    top = int(np.clip(round(centre[1]) - side // 2, 0, height - side))
    left = int(np.clip(round(centre[0]) - side // 2, 0, width - side))
    square = np.zeros_like(region, dtype=bool)
    square[top : top + side, left : left + side] = True
    return square
