"""Scratches, holes and swirl deformations with exact masks: the ``defects`` strategy
(registered in :mod:`pagmfr.anomalies.strategies`) that validation uses by default. (The
embedded dataset's test defects are another family: :mod:`pagmfr.data.test_defects`.)

A family no training generator produces (those blend Perlin-masked textures or paste object
cut-outs), so choosing the best epoch on it measures every generator variant against the same
yardstick, and a variant is not favoured for resembling the validation anomalies.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from pagmfr.categories import OBJECT

DEFECT_TYPES = ("scratch", "hole", "deformation")


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
    """Paint one defect. The mask is the painted region: pixels outside it are unchanged, and
    most inside it changed (a region where too few did is drawn again)."""
    painter = DEFECT_PAINTERS[defect]
    while True:
        painted, region = painter(image, rng, defect_centre(rng, image.shape[0], kind))
        out = np.where(region[..., None], painted, image)
        changed = np.any(out != image, axis=2)
        if region.sum() >= 4 and changed.sum() >= 0.5 * region.sum():
            return out, region
