"""What training consumes: the embedded dataset on demand, a seeded train/validation split of
train/good, pseudo-anomalies made in loader workers, and a fixed validation set."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pagmfr.anomalies import PseudoAnomalyGenerator
from pagmfr.data.check import (
    MIN_FIT_IMAGES,
    MIN_TRAIN_IMAGES,
    MIN_VALIDATION_IMAGES,
    require_clean_data,
)
from pagmfr.data.dataset import MVTecAD, image_to_tensor
from pagmfr.data.synthetic import make_synthetic_dataset

SYNTHETIC = "synthetic"
SYNTHETIC_SIZE = 128
SYNTHETIC_SEED = 0
#: Names the cached copy: a new version of the embedded dataset (v2: test defects of their own
#: family) is written anew, never read from an earlier version's cache.
SYNTHETIC_VERSION = 2
#: The random stream of the validation anomalies: an "epoch" no training run reaches.
VALIDATION_STREAM = 2**31


def cache_dir() -> Path:
    """Where the embedded dataset is written once (``$PAGMFR_CACHE``, default ~/.cache/pagmfr)."""
    return Path(os.environ.get("PAGMFR_CACHE", Path.home() / ".cache" / "pagmfr"))


def resolve_data_root(root: str | Path) -> Path:
    """``"synthetic"`` -> the embedded dataset (written once into the cache, atomically, so
    concurrent trials never see half a dataset); anything else is a path."""
    if str(root) != SYNTHETIC:
        return Path(root).expanduser()
    target = cache_dir() / f"synthetic-v{SYNTHETIC_VERSION}-s{SYNTHETIC_SEED}-{SYNTHETIC_SIZE}px"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=target.parent))
        make_synthetic_dataset(staging, image_size=SYNTHETIC_SIZE, seed=SYNTHETIC_SEED)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: theirs is identical
            shutil.rmtree(staging, ignore_errors=True)
    return target


def checked_data_root(
    root: str | Path, categories: Iterable[str], image_size: int | None = None
) -> Path:
    """The data root (see :func:`resolve_data_root`), its categories checked before any work
    starts: the same check as ``pagmfr data check``, which raises with every problem."""
    resolved = resolve_data_root(root)
    require_clean_data(resolved, categories, image_size)
    return resolved


def validation_count(count: int, fraction: float) -> int:
    """How many of ``count`` training images validation holds out (``fraction`` of them, at
    least :data:`MIN_VALIDATION_IMAGES`); refused, naming data.val_fraction and the counts,
    when fewer than :data:`MIN_FIT_IMAGES` would be left to train on."""
    held_out = max(MIN_VALIDATION_IMAGES, round(fraction * count))
    left = count - held_out
    if left >= MIN_FIT_IMAGES:
        return held_out
    if count < MIN_TRAIN_IMAGES:
        raise ValueError(
            f"only {count} training image(s): validation holds out {MIN_VALIDATION_IMAGES} and "
            f"training needs at least {MIN_FIT_IMAGES}; add training images (at least "
            f"{MIN_TRAIN_IMAGES})"
        )
    largest = math.floor(100 * (count - MIN_FIT_IMAGES) / count) / 100
    raise ValueError(
        f"data.val_fraction {fraction} holds out {held_out} of the {count} training images, "
        f"leaving {left} to train on; training needs at least {MIN_FIT_IMAGES}: set "
        f"data.val_fraction to {largest} or less"
    )


def split_train_validation(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of train/good indices into training and validation (see
    :func:`validation_count`)."""
    held_out = validation_count(count, fraction)
    order = np.random.default_rng([seed, 7]).permutation(count)
    return sorted(order[held_out:].tolist()), sorted(order[:held_out].tolist())


class PseudoAnomalyTrainSet(Dataset):
    """Clean image, its pseudo-anomalous version and mask, and ``index``: the sample's position
    in this training set (0..len-1), the order :meth:`TrainingSetup.clean_batches` yields the
    clean images in, so a model can tell which of its prepared entries (a prompt bank, a
    memory bank) came from this very image and leave it out. Each sample's randomness comes
    from (seed, epoch, index), so it does not depend on the worker that draws it and a resumed
    run sees the same samples. Set ``epoch`` before each epoch's loader is created."""

    def __init__(self, base: MVTecAD, indices: list[int], generator: PseudoAnomalyGenerator):
        self.base = base
        self.indices = indices
        self.generator = generator
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        index = self.indices[i]
        image, _ = self.base.load_arrays(index)
        pseudo, mask = self.generator(image, rng=self.generator.sample_rng(self.epoch, index))
        return {
            "image": image_to_tensor(image),
            "pseudo": image_to_tensor(pseudo),
            "mask": torch.from_numpy(mask[None].astype(np.float32)),
            "index": torch.tensor(i, dtype=torch.long),
        }


def validation_set(
    base: MVTecAD, indices: list[int], generators: Sequence[PseudoAnomalyGenerator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out normal images, every other one with a pseudo-anomaly, the anomalous ones
    taking the ``generators`` (each with normal_probability 0) in turn: the same images and
    anomalies every epoch. Returns images (N, 3, H, W) and masks (N, 1, H, W)."""
    images, masks = [], []
    for k, index in enumerate(indices):
        image, _ = base.load_arrays(index)
        mask = np.zeros(image.shape[:2], dtype=bool)
        if k % 2 == 1:
            generator = generators[(k // 2) % len(generators)]
            image, mask = generator(image, rng=generator.sample_rng(VALIDATION_STREAM, index))
        images.append(image_to_tensor(image))
        masks.append(torch.from_numpy(mask[None].astype(np.float32)))
    return torch.stack(images), torch.stack(masks)
