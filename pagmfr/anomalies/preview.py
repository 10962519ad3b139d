"""``pagmfr generator preview``: look at what the model is trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pagmfr.anomalies.generator import make_generator
from pagmfr.categories import TEXTURE
from pagmfr.data.images import read_rgb, resize_rgb, write_png
from pagmfr.data.synthetic import SYNTHETIC_CATEGORIES

_GAP = 4


def default_image(category_kind: str, size: int) -> np.ndarray:
    """A normal image of the embedded dataset's brick (texture) or coffee (object) category."""
    spec = SYNTHETIC_CATEGORIES["brick" if category_kind == TEXTURE else "coffee"]
    return spec.draw_normal(spec.photo(), np.random.default_rng(0), size)


def preview_grid(generator, image: np.ndarray, samples: int) -> np.ndarray:
    """Rows of original | pseudo-anomalous | mask (white), separated by white gaps."""
    height, width = image.shape[:2]
    rows = []
    for _ in range(samples):
        out, mask = generator(image)
        mask_rgb = np.repeat(mask[..., None], 3, axis=2).astype(np.uint8) * 255
        gap = np.full((height, _GAP, 3), 255, np.uint8)
        rows.append(np.hstack([image, gap, out, gap, mask_rgb]))
    separator = np.full((_GAP, rows[0].shape[1], 3), 255, np.uint8)
    return np.vstack([part for row in rows for part in (row, separator)][:-1])


def write_preview(
    out: str | Path,
    strategy: str,
    category_kind: str,
    image: str | Path | None = None,
    samples: int = 6,
    image_size: int = 256,
    seed: int = 0,
    texture_dir: str | Path | None = None,
    object_dir: str | Path | None = None,
) -> Path:
    """Write the preview grid as a PNG and return its path. Every row shows an anomaly
    (``normal_probability`` is 0 here), except with the ``none`` strategy."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    generator = make_generator(
        strategy, category_kind, texture_dir, object_dir, image_size, seed, normal_probability=0.0
    )
    normal = default_image(category_kind, image_size) if image is None else read_rgb(image)
    normal = resize_rgb(normal, (image_size, image_size))
    out = Path(out)
    write_png(out, preview_grid(generator, normal, samples))
    return out
