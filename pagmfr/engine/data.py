"""The data side of a training run: training samples (with pseudo-anomalies when the method
uses them) and the fixed set the best epoch is chosen on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pagmfr.anomalies import make_generator
from pagmfr.config import Config
from pagmfr.data.dataset import MVTecAD, image_to_tensor
from pagmfr.data.layout import validation_split
from pagmfr.data.pipeline import (
    PseudoAnomalyTrainSet,
    checked_data_root,
    split_train_validation,
    validation_set,
)


@dataclass
class TrainingSetup:
    """Training samples, the set every epoch is measured on (images, masks, labels: held-out
    validation images, or the test split when the selection protocol asks), the data's
    fingerprint, and which defect-free images validation uses, in words (recorded with the
    run: a layout with held-out images of its own uses them)."""

    train_set: PseudoAnomalyTrainSet
    images: torch.Tensor  # (N, 3, H, W)
    masks: np.ndarray  # (N, H, W) bool
    labels: np.ndarray  # (N,)
    fingerprint: str
    validation_images: str

    def clean_batches(self, batch_size: int) -> Iterable[torch.Tensor]:
        """The training images without pseudo-anomalies, e.g. for memory or prompt banks, in the
        order of the training set: the k-th image yielded is the sample with ``index`` k."""
        data, indices = self.train_set.base, self.train_set.indices
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            yield torch.stack([image_to_tensor(data.load_arrays(i)[0]) for i in chunk])


def data_root(config: Config) -> Path:
    """The config's data root, its category checked (every split) before any work starts."""
    data = config.data
    return checked_data_root(data.root, [data.category], data.image_size)


def load_test_split(config: Config, kind: str | None = None) -> MVTecAD:
    """The configured category's test split at model resolution."""
    root = data_root(config)
    return MVTecAD(
        root, config.data.category, "test", config.data.image_size, kind=kind or config.data.kind
    )


def split_arrays(dataset: MVTecAD) -> tuple[np.ndarray, np.ndarray]:
    """Masks (N, H, W) and labels (N,) of a split, at its image size."""
    masks = np.stack([dataset.load_arrays(i)[1] for i in range(len(dataset))])
    return masks, dataset.labels


class ValidationImages(NamedTuple):
    """The defect-free images validation uses: ``indices`` of ``data``, the training images
    left to train on, and the choice in words."""

    data: MVTecAD
    indices: list[int]
    train_indices: list[int]
    described: str


def validation_images(config: Config, root: Path, train_data: MVTecAD) -> ValidationImages:
    """The dataset's own held-out defect-free images where its layout has them and
    ``data.validation_images`` is ``auto`` (every training image then trains), else a seeded
    ``data.val_fraction`` of the training images."""
    data = config.data
    split = validation_split(root, data.category, data.validation_images)
    if split is None:
        train_idx, val_idx = split_train_validation(
            len(train_data), data.val_fraction, config.train.seed
        )
        described = (
            f"{len(val_idx)} of the {len(train_data)} training images, held out "
            f"(data.val_fraction {data.val_fraction:g}, train.seed {config.train.seed})"
        )
        return ValidationImages(train_data, val_idx, train_idx, described)
    held_out = MVTecAD(root, data.category, split, data.image_size, kind=train_data.kind)
    described = f"the {len(held_out)} defect-free images of the dataset's {split} split"
    return ValidationImages(
        held_out, list(range(len(held_out))), list(range(len(train_data))), described
    )


def prepare_training(config: Config) -> TrainingSetup:
    """Choose the validation images (:func:`validation_images`), build the seeded generators,
    and fix the set every epoch is measured on: validation images with pseudo-anomalies from
    ``validation.strategy`` (or the test split, only when ``validation.select`` chooses on a
    test metric)."""
    seed, generator_config = config.train.seed, config.generator
    root = data_root(config)
    train_data = MVTecAD(
        root, config.data.category, "train", config.data.image_size, kind=config.data.kind
    )
    validation = validation_images(config, root, train_data)
    kind = train_data.kind
    strategy = generator_config.strategy if config.uses_pseudo_anomalies else "none"
    generator = make_generator(
        strategy,
        kind,
        generator_config.texture_dir,
        generator_config.object_dir,
        config.data.image_size,
        seed,
        settings=generator_config,
    )
    train_set = PseudoAnomalyTrainSet(train_data, validation.train_indices, generator)
    fingerprint = train_data.fingerprint()
    if config.validation.on_test:
        test_data = load_test_split(config, kind)
        masks, labels = split_arrays(test_data)
        images = torch.stack([test_data[i]["image"] for i in range(len(test_data))])
        described = "none: epochs are chosen on the test split"
        return TrainingSetup(train_set, images, masks, labels, fingerprint, described)
    validators = [
        make_generator(
            family,
            kind,
            generator_config.texture_dir,
            generator_config.object_dir,
            config.data.image_size,
            seed + 1,
            normal_probability=0.0,
        )
        for family in config.validation.families
    ]
    if validation.data is not train_data:  # its images choose the epoch: part of the data
        fingerprint += "+" + validation.data.fingerprint()
    images, mask_tensor = validation_set(validation.data, validation.indices, validators)
    masks = mask_tensor[:, 0].numpy() > 0
    labels = masks.any(axis=(1, 2)).astype(np.int64)
    return TrainingSetup(train_set, images, masks, labels, fingerprint, validation.described)
