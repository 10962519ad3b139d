"""The embedded dataset's test defects: foreign contamination, cracks and missing pieces.

A family of its own. Validation's default yardstick (the ``defects`` strategy: scratches,
holes, swirls) and the training generators (Perlin-masked texture blends, pasted cut-outs of
brick, grass, gravel, coffee, chelsea, astronaut, rocket, coins, ...) never produce these, and
the contamination comes from photographs neither uses (retina, camera, moon, clock). So on the
embedded data, as on real data, a selection protocol that tracks its own yardstick rather
than real defects shows up as a gap between validation and test. Deliberately not a
registered strategy: the test family must not become a training or validation family.

Each painter returns what it paints and where; the mask is exactly that region.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from skimage import data as skdata

from pagmfr.anomalies.defects import paint_visible

TEST_DEFECT_TYPES = ("contamination", "crack", "missing")


@functools.cache
def _foreign_photos() -> tuple[np.ndarray, ...]:
    """RGB photographs that no pseudo-anomaly source uses (grey ones are tinted per use)."""
    grey = [skdata.camera(), skdata.moon(), skdata.clock()]
    return (skdata.retina()[300:1100, 300:1100], *(np.repeat(g[..., None], 3, 2) for g in grey))


def _blob(size: int, centre: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """An irregular filled blob: a star-shaped polygon with jittered radii, softened."""
    corners = int(rng.integers(7, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = radius * rng.uniform(0.5, 1.0, corners)
    points = centre + np.column_stack([np.cos(angles), np.sin(angles)]) * radii[:, None]
    canvas = np.zeros((size, size), np.float32)
    cv2.fillPoly(canvas, [np.rint(points).astype(np.int32)], 1.0)
    return cv2.GaussianBlur(canvas, (0, 0), max(radius / 6, 0.5)) > 0.5


def _contamination(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray) -> tuple:
    """Foreign material: a blob of another photograph, tinted, hard-edged."""
    size = image.shape[0]
    region = _blob(size, centre, rng.uniform(0.05, 0.1) * size, rng)
    photo = _foreign_photos()[int(rng.integers(len(_foreign_photos())))]
    side = int(rng.integers(size // 2, min(photo.shape[:2])))
    top = int(rng.integers(photo.shape[0] - side + 1))
    left = int(rng.integers(photo.shape[1] - side + 1))
    crop = cv2.resize(photo[top : top + side, left : left + side], (size, size))
    tint = rng.uniform(0.5, 1.3, size=3)
    return np.clip(crop * tint, 0, 255).astype(np.uint8), region


def _crack(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray) -> tuple:
    """A branching fracture: a jagged main line with side branches, the surface darkened
    along it (relative to its own colour, unlike a scratch's flat paint)."""
    size = image.shape[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    thickness = max(1, round(size / 80))

    def walk(start: np.ndarray, heading: float, steps: int, step: float) -> np.ndarray:
        points = [start]
        for _ in range(steps):
            heading += rng.uniform(-0.8, 0.8)
            points.append(points[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
        cv2.polylines(mask, [np.rint(points).astype(np.int32)], False, 1, thickness, cv2.LINE_8)
        return np.array(points)

    main = walk(centre, rng.uniform(0, 2 * np.pi), int(rng.integers(6, 11)), 0.025 * size)
    for _ in range(int(rng.integers(1, 4))):
        joint = main[int(rng.integers(1, len(main)))]
        walk(joint, rng.uniform(0, 2 * np.pi), int(rng.integers(2, 5)), 0.02 * size)
    darkened = image.astype(np.float32) * rng.uniform(0.1, 0.4)
    return np.rint(darkened).astype(np.uint8), mask.astype(bool)


def _missing(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray) -> tuple:
    """A missing piece: a blob where the surface is gone, showing the background colour (the
    median of the image's border: the board under an object, the mean tone of a texture)."""
    size = image.shape[0]
    region = _blob(size, centre, rng.uniform(0.06, 0.12) * size, rng)
    border = np.concatenate([image[:2], image[-2:], image[:, :2].swapaxes(0, 1)], axis=1)
    colour = np.median(border.reshape(-1, 3), axis=0)
    fill = colour + rng.normal(0, 4, image.shape)
    return np.clip(np.rint(fill), 0, 255).astype(np.uint8), region


_PAINTERS = {"contamination": _contamination, "crack": _crack, "missing": _missing}


def add_test_defect(
    image: np.ndarray, defect: str, rng: np.random.Generator, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one test defect on a uint8 (H, W, 3) image; drawn again a bounded number of times
    when it changes too few pixels, as validation's are (see
    :func:`~pagmfr.anomalies.defects.paint_visible`)."""
    return paint_visible(image, _PAINTERS[defect], rng, kind)
