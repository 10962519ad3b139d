"""Torch datasets over every layout pagmfr reads (MVTec AD, MVTec 3D-AD RGB, MVTec AD 2, VisA,
plain folders: :mod:`pagmfr.data.layout`)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from pagmfr.categories import category_kind
from pagmfr.data.cache import IMAGE_CACHE
from pagmfr.data.images import as_size, inspect_rgb, read_mask_file, resize_mask, resize_rgb
from pagmfr.data.layout import MVTEC_3D, DatasetError, Problem, Sample, scan_split


class SampleRead(NamedTuple):
    """One sample decoded at full size (see :func:`inspect_sample`)."""

    image: np.ndarray
    mask: np.ndarray
    notes: list[Problem]
    #: The grey values its mask file holds (empty without one): the data check names them.
    mask_values: tuple[int, ...] = ()


def inspect_sample(sample: Sample) -> SampleRead:
    """Decode one sample at full size: uint8 RGB (H, W, 3), a bool mask (H, W) read as the
    sample's dataset defines its masks and that must match the image's size, and notes on
    the image and mask files, each naming its file (see
    :func:`~pagmfr.data.images.inspect_rgb` and :func:`~pagmfr.data.images.read_mask_file`)."""
    image, image_notes = inspect_rgb(sample.image)
    notes = [Problem(sample.image, note) for note in image_notes]
    if sample.mask is None:
        return SampleRead(image, np.zeros(image.shape[:2], dtype=bool), notes)
    mask, mask_notes, values = read_mask_file(sample.mask, sample.masks)
    if mask.shape != image.shape[:2]:
        raise DatasetError(
            Problem(
                sample.mask,
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {sample.image.name} "
                f"is {image.shape[1]}x{image.shape[0]}; masks must match their image size",
            )
        )
    return SampleRead(image, mask, notes + [Problem(sample.mask, n) for n in mask_notes], values)


def cached_sample(
    sample: Sample,
    size: tuple[int, int],
    decoded: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The sample at ``size`` (height, width) from the per-process cache; on a miss, decoded
    from its files or resized from ``decoded`` (what the data check already read). Keyed on
    the mask and how it is read too: an image listed twice (a VisA row in each split) must
    not get another row's mask."""

    def load() -> tuple[np.ndarray, np.ndarray]:
        image, mask = decoded or inspect_sample(sample)[:2]
        return resize_rgb(image, size), resize_mask(mask, size)

    key = (str(sample.image), str(sample.mask), sample.masks.threshold, size)
    return IMAGE_CACHE.get_or_load(key, load)


class MVTecAD(Dataset):
    """One category and split of a dataset in any layout pagmfr reads, detected per category
    (MVTec AD, the first, gave the class its name).

    Items are dicts: ``image`` float32 (3, H, W) in [0, 1] (normalisation belongs to the model),
    ``mask`` float32 (1, H, W) of 0/1, ``label`` (0 good, 1 defective), ``defect``, ``path``.
    Decoded images are cached per process (see :mod:`pagmfr.data.cache`).
    """

    layout = "auto"

    def __init__(
        self,
        root: str | Path,
        category: str,
        split: str = "train",
        image_size: int | tuple[int, int] = 256,
        kind: str | None = None,
    ):
        self.root = Path(root)
        self.category = category
        self.split = split
        self.image_size = as_size(image_size)
        scan = scan_split(self.root, category, split, self.layout)
        if scan.problems:
            raise DatasetError(scan.problems)
        self.samples = scan.samples
        self.kind = kind or category_kind(category, root=self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) and bool mask (H, W) at ``image_size``; read-only, cached."""
        return cached_sample(self.samples[index], self.image_size)

    def __getitem__(self, index: int) -> dict:
        image, mask = self.load_arrays(index)
        sample = self.samples[index]
        return {
            "image": image_to_tensor(image),
            "mask": torch.from_numpy(mask[None].astype(np.float32)),
            "label": sample.label,
            "defect": sample.defect,
            "path": str(sample.image),
        }

    @property
    def labels(self) -> np.ndarray:
        """0 (good) or 1 (defective) per sample."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def defect_counts(self) -> dict[str, int]:
        """Images per defect type."""
        return dict(sorted(Counter(s.defect for s in self.samples).items()))

    def fingerprint(self) -> str:
        """A hash of every file's name and bytes, recorded with each run for reproducibility."""
        digest = hashlib.blake2b(digest_size=16)
        for sample in self.samples:
            for path in (sample.image, sample.mask):
                if path is not None:
                    digest.update(str(path.relative_to(self.root)).encode())
                    digest.update(path.read_bytes())
        return digest.hexdigest()


class MVTec3DRGB(MVTecAD):
    """The RGB part of MVTec 3D-AD: ``<cat>/<split>/<defect>/rgb/*.png`` with ``gt/*.png``."""

    layout = MVTEC_3D


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
