"""Test images that are also training images: a copy of a test image in train/good (or in the
validation hold-out, drawn from train/good) is scored as normal because it was learnt as
normal, which inflates every test metric without any error.

Each image is fingerprinted once, while the data check decodes it anyway: a digest of its
pixels finds identical copies (byte for byte, or re-saved with the same pixels), and a grey
thumbnail finds near-identical ones (re-compressed, resized). *Near* is relative to the data:
a test image is near-identical to a training image when their thumbnails are far closer than
training images are to each other, so aligned objects that all look alike (MVTec's bottles)
are not flagged, as a fixed threshold or a small perceptual hash could flag them.

A layout's own validation images (MVTec AD 2's ``validation/good``) are checked against
train/good the same way: copies there would choose epochs and settings on training images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pagmfr.data.layout import Problem

#: Thumbnail side: small enough for a whole category's pairwise distances in milliseconds.
THUMBNAIL = 16
#: Near-identical: closer than this fraction of the median distance between a training image
#: and its nearest other training image. On the embedded data, JPEG (quality 70) and resized
#: copies lie under 0.1 of it, distinct images above 0.45.
NEAR_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """One image's pixel digest and grey thumbnail (float64, ``THUMBNAIL**2`` values)."""

    path: Path
    digest: bytes
    thumbnail: np.ndarray


def fingerprint(path: Path, image: np.ndarray) -> Fingerprint:
    """The fingerprint of ``image`` (uint8 RGB, H x W x 3), decoded from ``path``."""
    # SHA-1 for speed (CPUs accelerate it; about 2 ms per MVTec image): an identity, not a seal.
    digest = hashlib.sha1(repr(image.shape).encode(), usedforsecurity=False)
    digest.update(np.ascontiguousarray(image))
    small = cv2.resize(image, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return Fingerprint(path, digest.digest(), grey.astype(np.float64).ravel())


#: Why a copy of another split's image in a split matters, by the split holding the copy.
HARM = {
    "test": "a model learns it as normal, which inflates every test metric",
    "validation": "validation then scores an image the model trained on, so epochs and "
    "settings are chosen on training images",
}


def leakage_warnings(
    reference: list[Fingerprint], images: list[Fingerprint], split: str, checked: str = "test"
) -> list[Problem]:
    """One warning per image of ``images`` (of the ``checked`` split: test, or a validation
    split) that is identical or near-identical to an image of the ``split`` (train or
    validation) images ``reference``, naming both files."""
    if not reference or not images:
        return []
    copies: dict[bytes, list[Path]] = {}
    for image in reference:
        copies.setdefault(image.digest, []).append(image.path)
    distances = _rms_distances(_thumbnails(images), _thumbnails(reference))
    near = NEAR_FRACTION * _typical_spacing(reference)
    warnings = []
    for image, row in zip(images, distances, strict=True):
        same = copies.get(image.digest)
        if same:
            warnings.append(_warning(image.path, same, split, checked, "identical to"))
        elif row.min() < near:
            closest = [reference[i].path for i in np.argsort(row) if row[i] < near]
            warnings.append(_warning(image.path, closest, split, checked, "nearly identical to"))
    return warnings


def _warning(path: Path, copies: list[Path], split: str, checked: str, how: str) -> Problem:
    more = f" (and {len(copies) - 1} more)" if len(copies) > 1 else ""
    return Problem(
        path,
        f"{checked} image {how} {split} image {copies[0]}{more}: {HARM[checked]}; remove the "
        "copy from one of the splits",
    )


def _thumbnails(prints: list[Fingerprint]) -> np.ndarray:
    return np.stack([f.thumbnail for f in prints])


def _rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference between every row of ``a`` and every row of ``b``."""
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0) / a.shape[1])


def _typical_spacing(prints: list[Fingerprint]) -> float:
    """The median distance from an image to its nearest other one (0 for a single image)."""
    if len(prints) < 2:
        return 0.0
    thumbnails = _thumbnails(prints)
    distances = _rms_distances(thumbnails, thumbnails)
    np.fill_diagonal(distances, np.inf)
    return float(np.median(distances.min(axis=1)))
