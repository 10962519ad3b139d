"""Where pseudo-anomalies take their content from: textures and object cut-outs.

A user folder (the DTD dataset for textures, any photographs for objects) or, when none is
given, photographs that ship inside scikit-image plus a few procedural textures, so everything
works offline. Large folders are sampled into a bounded, seeded bank to keep worker memory flat.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from pagmfr.anomalies.perlin import perlin_field
from pagmfr.data.images import IMAGE_SUFFIXES, is_hidden, read_rgb


@dataclass(frozen=True)
class Cutout:
    """An object cut out of an external image: its pixels and exact footprint."""

    rgb: np.ndarray  # uint8 (h, w, 3)
    footprint: np.ndarray  # bool (h, w)


def image_files(folder: str | Path, role: str) -> list[Path]:
    """The image files of a user folder, or a clear error naming it."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{role} folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"{role} folder is not a folder: {folder}")
    try:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and not any(is_hidden(Path(part)) for part in p.relative_to(folder).parts)
        )
    except OSError as err:
        raise OSError(f"{role} folder cannot be read: {folder} ({err})") from err
    if not files:
        raise ValueError(f"{role} folder has no images ({', '.join(IMAGE_SUFFIXES)}): {folder}")
    return files


def _bank_sample(files: list[Path], bank_size: int, seed: int) -> list[Path]:
    if len(files) <= bank_size:
        return files
    picked = np.random.default_rng(seed).choice(len(files), size=bank_size, replace=False)
    return [files[i] for i in sorted(picked)]


def _fit_short_side(image: np.ndarray, side: int) -> np.ndarray:
    scale = side / min(image.shape[:2])
    size = (max(side, round(image.shape[1] * scale)), max(side, round(image.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


def _procedural_textures(side: int) -> list[np.ndarray]:
    """Colour noise, stripes and a checkerboard: shapes no photograph in the bank has."""
    rng = np.random.default_rng(1234)
    textures = []
    for cells in (4, 16):
        channels = [
            perlin_field(side, side, (cells, cells), rng.permutation(256)) for _ in range(3)
        ]
        field = np.stack(channels, axis=2)
        textures.append(np.uint8(np.clip((field + 0.8) / 1.6 * 255, 0, 255)))
    ys, xs = np.mgrid[0:side, 0:side] / side
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 9 * (0.8 * xs + 0.6 * ys))
    textures.append(np.uint8(stripes[..., None] * [230, 120, 40] + 20))
    checker = ((xs * 8).astype(int) + (ys * 8).astype(int)) % 2
    textures.append(np.uint8(checker[..., None] * [200, 200, 200] + 30))
    return textures


@functools.lru_cache(maxsize=4)
def builtin_textures(side: int) -> tuple[np.ndarray, ...]:
    """scikit-image's texture-like photographs and procedural textures, short side ``side``."""
    photos = [
        _grey_rgb(skdata.brick()),
        _grey_rgb(skdata.grass()),
        _grey_rgb(skdata.gravel()),
        skdata.immunohistochemistry(),
        skdata.hubble_deep_field()[:500, :500],
        skdata.coffee()[:150, :200],  # the wooden table
        skdata.astronaut()[:200, :120],  # the flag
    ]
    return tuple(_fit_short_side(t, side) for t in photos + _procedural_textures(side))


def load_textures(
    folder: str | Path | None, side: int, bank_size: int, seed: int
) -> list[np.ndarray]:
    """Textures with short side ``side``: up to ``bank_size`` from ``folder``, else built-ins."""
    if folder is None:
        return list(builtin_textures(side))
    files = _bank_sample(image_files(folder, "texture"), bank_size, seed)
    return [_fit_short_side(read_rgb(path), side) for path in files]


# ---- object cut-outs ----

_WORK_SIDE = 160  # foreground extraction runs at this size: GrabCut is slow at full size


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def extract_foreground(image: np.ndarray) -> np.ndarray | None:
    """The main object of a photograph as a bool mask, by GrabCut seeded with the central
    region; None when it finds nothing plausible (under 3% or over 90% of the image)."""
    mask = np.zeros(image.shape[:2], np.uint8)
    height, width = mask.shape
    rect = (width // 10, height // 10, width - width // 5, height - height // 5)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut initialises with k-means: fix it for reproducible cut-outs
    cv2.grabCut(image, mask, rect, background, foreground, 4, cv2.GC_INIT_WITH_RECT)
    object_mask = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    object_mask = cv2.morphologyEx(
        object_mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)
    )
    object_mask = largest_component(object_mask)
    if not 0.03 <= object_mask.mean() <= 0.9:
        return None
    return object_mask


def _cutout(image: np.ndarray, footprint: np.ndarray) -> Cutout:
    rows, cols = np.flatnonzero(footprint.any(1)), np.flatnonzero(footprint.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return Cutout(np.ascontiguousarray(image[box]), np.ascontiguousarray(footprint[box]))


def cutouts_from_image(image: np.ndarray) -> list[Cutout]:
    """Object cut-outs found in one image (GrabCut around its salient region)."""
    image = _fit_short_side(image, _WORK_SIDE) if min(image.shape[:2]) > _WORK_SIDE else image
    footprint = extract_foreground(image)
    return [] if footprint is None else [_cutout(image, footprint)]


def _coin_cutouts() -> list[Cutout]:
    """The largest coins of scikit-image's coins photograph, by Otsu on the plain board."""
    grey = skdata.coins()
    _, binary = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels = cv2.connectedComponents(binary)
    rgb = _grey_rgb(grey)
    cutouts = sorted(
        (_cutout(rgb, labels == k) for k in range(1, count)), key=lambda c: -c.footprint.sum()
    )
    return cutouts[:6]  # a few: coins should not outnumber the other photographs


@functools.lru_cache(maxsize=1)
def builtin_cutouts() -> tuple[Cutout, ...]:
    """Cut-outs from scikit-image's photographs: external objects with no download."""
    photos = [skdata.chelsea(), skdata.astronaut(), skdata.coffee(), skdata.rocket()]
    cutouts = [c for photo in photos for c in cutouts_from_image(photo)]
    return tuple(cutouts + _coin_cutouts())


def load_cutouts(folder: str | Path | None, bank_size: int, seed: int) -> list[Cutout]:
    """Object cut-outs from up to ``bank_size`` images of ``folder``, else built-ins."""
    if folder is None:
        return list(builtin_cutouts())
    files = _bank_sample(image_files(folder, "object"), bank_size, seed)
    cutouts = [c for path in files for c in cutouts_from_image(read_rgb(path))]
    if not cutouts:
        raise ValueError(
            f"object folder {folder}: no object could be cut out of its {len(files)} image(s); "
            "use photographs with one clear object on a distinct background"
        )
    return cutouts
