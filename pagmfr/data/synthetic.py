"""The embedded dataset: a small MVTec AD-layout dataset made from scikit-image's photographs.

Nothing can be downloaded on many machines, yet a new user should see the whole pipeline work.
Normal images are crops of real photographs with natural variation (position, rotation,
lighting). Test defects are foreign contamination, cracks and missing pieces
(:mod:`pagmfr.data.test_defects`): a family that neither the training-time pseudo-anomaly
generator (Perlin-masked texture blends, pasted object cut-outs) nor validation's default
yardstick (scratches, holes, swirls) produces, so a selection that only tracks its own
yardstick shows up here as it would on real defects. Every defect's mask is exact: the
painted region.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from pagmfr.categories import KINDS_FILE, OBJECT, TEXTURE, read_kinds_file
from pagmfr.data.images import write_png
from pagmfr.data.test_defects import TEST_DEFECT_TYPES, add_test_defect


@dataclass(frozen=True)
class SyntheticCategory:
    """How to draw one normal image of a category from its source photograph."""

    kind: str
    photo: Callable[[], np.ndarray]
    draw_normal: Callable[[np.ndarray, np.random.Generator, int], np.ndarray]


def _rgb(photo: np.ndarray, tint: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    rgb = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3]
    return np.clip(rgb * np.asarray(tint, dtype=np.float32), 0, 255).astype(np.uint8)


def _relight(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting variation: global gain plus a gentle linear gradient."""
    height, width = image.shape[:2]
    gain = rng.uniform(0.9, 1.1)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height - 0.5) * rng.uniform(0, 16)
    lit = image.astype(np.float32) * gain + ramp[..., None]
    return np.clip(np.rint(lit), 0, 255).astype(np.uint8)


def _view(
    photo: np.ndarray,
    center: tuple[float, float],
    side: float,
    angle: float,
    size: int,
    background: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """A square view of ``photo`` (``side`` px, rotated by ``angle`` degrees) at ``size`` px;
    beyond the photo's edge it mirrors the photo, or shows ``background`` when given."""
    matrix = cv2.getRotationMatrix2D(center, angle, size / side)
    matrix[:, 2] += (size / 2 - center[0], size / 2 - center[1])
    # Supersample then area-shrink: no aliasing when the view is much larger than the output.
    factor = max(1, int(side // size))
    big = cv2.warpAffine(
        photo,
        matrix * [[factor], [factor]],
        (size * factor, size * factor),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101 if background is None else cv2.BORDER_CONSTANT,
        borderValue=background,
    )
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def _texture_view(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    height, width = photo.shape[:2]
    side = rng.uniform(0.4, 0.47) * min(height, width)
    center = (rng.uniform(side, width - side), rng.uniform(side, height - side))
    return _relight(_view(photo, center, side, rng.uniform(-3, 3), size), rng)


def _coffee_view(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    center = (275 + rng.uniform(-10, 10), 215 + rng.uniform(-10, 10))
    return _relight(
        _view(photo, center, 390 * rng.uniform(0.96, 1.04), rng.uniform(-6, 6), size), rng
    )


def _coin_centres(photo: np.ndarray) -> np.ndarray:
    """Centres and diameters of the larger coins in skimage's coins photograph."""
    grey = photo[..., 0]
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    _, _, stats, centroids = cv2.connectedComponentsWithStats(binary)
    stats, centroids = stats[1:], centroids[1:]
    areas = stats[:, cv2.CC_STAT_AREA]
    width, height = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    # One round coin fills about pi/4 of a square box; merged or clipped coins do not.
    fill = areas / (width * height)
    round_ = (np.abs(width / height - 1) < 0.2) & (np.abs(fill - np.pi / 4) < 0.12)
    keep = round_ & (areas >= np.median(areas[round_]))
    return np.column_stack([centroids[keep], np.sqrt(areas[keep] * 4 / np.pi)])


def _coin_view(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    coins = _coin_centres(photo)
    x, y, diameter = coins[rng.integers(len(coins))]
    center = (x + rng.uniform(-1.5, 1.5), y + rng.uniform(-1.5, 1.5))
    # The coins lie on a plain dark board: extend it rather than mirror coins at the edge.
    otsu, _ = cv2.threshold(photo[..., 0], 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    board = tuple(int(v) for v in np.median(photo[photo[..., 0] < otsu], axis=0))
    view = _view(photo, center, diameter * 1.7, rng.uniform(0, 360), size, background=board)
    return _relight(view, rng)


SYNTHETIC_CATEGORIES: dict[str, SyntheticCategory] = {
    "brick": SyntheticCategory(
        TEXTURE, lambda: _rgb(skdata.brick(), (1.0, 0.72, 0.58)), _texture_view
    ),
    "gravel": SyntheticCategory(
        TEXTURE, lambda: _rgb(skdata.gravel(), (0.95, 0.9, 0.8)), _texture_view
    ),
    "coffee": SyntheticCategory(OBJECT, lambda: _rgb(skdata.coffee()), _coffee_view),
    "coins": SyntheticCategory(OBJECT, lambda: _rgb(skdata.coins()), _coin_view),
}


def _rng(seed: int, category: str, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(category.encode()), *stream])


def _make_room(out: Path, categories: Sequence[str], overwrite: bool) -> None:
    """Refuse to write a category whose folder exists under ``out``: its files (of another
    size, seed or count) would silently mix with the new ones. ``overwrite`` removes those
    folders first; other categories under ``out`` stay as they are."""
    existing = [out / category for category in categories if (out / category).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(map(str, existing))}: already exists, and the new images would mix "
            "with its files; write to a new folder, or pass --overwrite (overwrite=True) to "
            "replace these categories"
        )
    for folder in existing:
        shutil.rmtree(folder)


def make_synthetic_dataset(
    out: str | Path,
    categories: Sequence[str] | None = None,
    image_size: int = 128,
    seed: int = 0,
    n_train: int = 48,
    n_test_good: int = 10,
    n_test_per_defect: int = 6,
    overwrite: bool = False,
) -> Path:
    """Write the embedded dataset in the MVTec AD layout; the same arguments give
    byte-identical files. A category already under ``out`` is refused, or with ``overwrite``
    replaced; other categories there are kept (and stay in its kinds file). Returns ``out``."""
    out = Path(out)
    categories = list(categories or SYNTHETIC_CATEGORIES)
    unknown = [c for c in categories if c not in SYNTHETIC_CATEGORIES]
    if unknown:
        raise ValueError(
            f"unknown synthetic categories {unknown}; available: {', '.join(SYNTHETIC_CATEGORIES)}"
        )
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 px, got {image_size}")
    _make_room(out, categories, overwrite)
    for category in categories:
        spec = SYNTHETIC_CATEGORIES[category]
        photo = spec.photo()
        folder = out / category

        def normal(*stream: int, spec=spec, photo=photo, category=category) -> tuple:
            rng = _rng(seed, category, *stream)
            return spec.draw_normal(photo, rng, image_size), rng

        for i in range(n_train):
            write_png(folder / "train" / "good" / f"{i:03d}.png", normal(0, i)[0])
        for i in range(n_test_good):
            write_png(folder / "test" / "good" / f"{i:03d}.png", normal(1, i)[0])
        for d, defect in enumerate(TEST_DEFECT_TYPES):
            for i in range(n_test_per_defect):
                image, rng = normal(2 + d, i)
                defective, mask = add_test_defect(image, defect, rng, spec.kind)
                write_png(folder / "test" / defect / f"{i:03d}.png", defective)
                write_png(folder / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    kinds = {**read_kinds_file(out), **{c: SYNTHETIC_CATEGORIES[c].kind for c in categories}}
    (out / KINDS_FILE).write_text(json.dumps(dict(sorted(kinds.items())), indent=2) + "\n")
    return out
