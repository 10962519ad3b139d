"""Inference and its records: anomaly maps and scores, the four metrics papers report,
``evaluate`` (metrics.json and heatmaps for a checkpoint's test split) and ``predict``."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pagmfr import metrics as M
from pagmfr.config import Config, describe_selection
from pagmfr.data.dataset import MVTecAD
from pagmfr.data.images import (
    IMAGE_SUFFIXES,
    is_hidden,
    list_images,
    read_mask,
    read_rgb,
    resize_rgb,
    write_png,
)
from pagmfr.engine.checkpoints import (
    MODEL_KEYS,
    checkpoint_config,
    load_checkpoint,
    model_from_checkpoint,
)
from pagmfr.engine.data import load_test_split, split_arrays
from pagmfr.engine.runtime import autocast, resolve_device
from pagmfr.files import require_output_folder, write_text_atomically
from pagmfr.models import AnomalyMethod
from pagmfr.provenance import code_version, environment
from pagmfr.visualize import comparison_row, heatmap_overlay

TEST_METRICS = ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max")
#: What ``evaluate`` and ``predict`` call their device in an error: the commands' option.
DEVICE_OPTION = "--device"


@torch.no_grad()
def infer(
    model: AnomalyMethod, images: Iterable[torch.Tensor], device: torch.device, amp: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps (N, H, W) and scores (N,) for batches of images in [0, 1]."""
    model.eval()
    maps, scores = [], []
    for batch in images:
        with autocast(device, amp):
            anomaly_map, score = model.predict(batch.to(device))
        maps.append(anomaly_map.float()[:, 0].cpu().numpy())
        scores.append(score.float().cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


def anomaly_metrics(
    maps: np.ndarray, masks: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """The four numbers papers report, from :mod:`pagmfr.metrics`."""
    return {
        "image_auroc": M.image_auroc(scores, labels),
        "pixel_auroc": M.pixel_auroc(maps, masks),
        "au_pro": M.au_pro(maps, masks, M.AU_PRO_FPR_LIMIT),
        "pixel_f1_max": M.f1_max(maps, masks),
    }


def batches(tensor: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    """Consecutive slices of ``size`` along the first axis."""
    return (tensor[i : i + size] for i in range(0, len(tensor), size))


def _dataset_batches(dataset: MVTecAD, size: int) -> Iterable[torch.Tensor]:
    loader = DataLoader(dataset, batch_size=size, shuffle=False, num_workers=0)
    return (batch["image"] for batch in loader)


def _full_resolution(dataset: MVTecAD, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps upsampled to each image's original size, with the original masks."""
    import cv2

    full_maps, full_masks = [], []
    for sample, anomaly_map in zip(dataset.samples, maps, strict=True):
        height, width = read_rgb(sample.image).shape[:2]
        full_maps.append(cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR))
        full_masks.append(
            np.zeros((height, width), bool)
            if sample.mask is None
            else read_mask(sample.mask, sample.masks)
        )
    if len({m.shape for m in full_maps}) > 1:
        raise ValueError(
            f"{dataset.root / dataset.category}: test images differ in size; "
            "full-resolution metrics need one size"
        )
    return np.stack(full_maps), np.stack(full_masks)


def _write_heatmaps(out_dir: Path, dataset: MVTecAD, maps: np.ndarray) -> None:
    vmin, vmax = float(maps.min()), float(maps.max())
    for index, (sample, anomaly_map) in enumerate(zip(dataset.samples, maps, strict=True)):
        image, mask = dataset.load_arrays(index)
        row = comparison_row(image, mask, anomaly_map, vmin, vmax)
        write_png(out_dir / "heatmaps" / sample.defect / f"{sample.image.stem}.png", row)


def write_metrics(out_dir: str | Path, record: dict[str, Any]) -> Path:
    """``<out>/metrics.json``, written atomically (a report never reads half a file)."""
    return write_text_atomically(
        Path(out_dir) / "metrics.json", json.dumps(record, indent=2) + "\n"
    )


def validation_gaps(selection: dict[str, float], tested: dict[str, float]) -> dict[str, float]:
    """``gap_<metric>``: the selected epoch's validation value minus the test value: how far
    the yardstick the epoch was chosen on flatters the model (none when selection used test)."""
    return {
        f"gap_{metric}": selection[f"val_{metric}"] - tested[metric]
        for metric in TEST_METRICS
        if f"val_{metric}" in selection
    }


def _provenance(state: dict[str, Any], config: Config) -> dict[str, Any]:
    """How the tested model came to be: its selection, seed, config, code and data."""
    return {
        "selection": config.validation.select,
        "validation_family": config.validation.strategy,
        "selection_protocol": describe_selection(
            config.validation.select, config.validation.strategy
        ),
        "best_epoch": state["epoch"],
        "selection_metrics": state["best"]["metrics"],
        "validation_images": state.get("validation_images", "not recorded"),
        "seed": config.train.seed,
        "config": config.to_flat(),
        "code_version": code_version(),
        "trained_with_code_version": state.get("code_version"),
        "train_data_fingerprint": state.get("data_fingerprint"),
        "environment": environment(),
    }


def transfer_source(state: dict[str, Any], config: Config, checkpoint: str | Path) -> str | None:
    """The category the checkpoint was trained on when it is tested on another (a transfer:
    its record must not pass for a result of the tested category), else None."""
    trained = checkpoint_config(state, checkpoint).data.category
    return trained if trained != config.data.category else None


def evaluate(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    category: str | None = None,
    out_dir: str | Path | None = None,
    full_resolution: bool = False,
    heatmaps: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Test a checkpoint: image AUROC, pixel AUROC, AU-PRO and pixel F1-max on a test split.

    Args:
        checkpoint: a ``best`` or ``last`` checkpoint written by :func:`fit`.
        data_root, category: another data root or category than the checkpoint's own.
        out_dir: where ``metrics.json`` and (with ``heatmaps``) ``heatmaps/`` go; None: nowhere.
        full_resolution: metrics at the images' own size instead of the model's.
        device: auto, cpu, cuda, ...

    Returns:
        The metrics with their provenance: resolution, selection and selected epoch, seed, full
        config (its ``data.category``: the tested one), ``transfer_from`` (the category the
        checkpoint was trained on, when another: see :func:`transfer_source`), code versions and
        data fingerprints, environment.
    """
    if out_dir is not None:
        require_output_folder(out_dir)
    torch_device = resolve_device(device, DEVICE_OPTION)
    state = load_checkpoint(checkpoint, needs=(*MODEL_KEYS, "epoch", "best"))
    overrides = {
        k: str(v)
        for k, v in {"data.root": data_root, "data.category": category}.items()
        if v is not None
    }
    model, config = model_from_checkpoint(state, overrides, source=checkpoint)
    model.to(torch_device)
    test = load_test_split(config)
    started = time.perf_counter()
    images = _dataset_batches(test, config.train.batch_size)
    maps, scores = infer(model, images, torch_device, config.train.amp)
    inference_seconds = time.perf_counter() - started
    masks, labels = split_arrays(test)
    eval_maps, eval_masks = _full_resolution(test, maps) if full_resolution else (maps, masks)
    result: dict[str, Any] = anomaly_metrics(eval_maps, eval_masks, scores, labels)
    result.update(validation_gaps(state["best"]["metrics"], result))
    result.update(
        resolution="full" if full_resolution else f"{config.data.image_size}px",
        au_pro_fpr_limit=M.AU_PRO_FPR_LIMIT,
        test_images=len(test),
        inference_seconds=inference_seconds,
        checkpoint=str(checkpoint),
        transfer_from=transfer_source(state, config, checkpoint),
        data_fingerprint=test.fingerprint(),
        **_provenance(state, config),
    )
    if out_dir is not None:
        write_metrics(out_dir, result)
        if heatmaps:
            _write_heatmaps(Path(out_dir), test, maps)
    return result


def _images_under(folder: Path) -> list[Path]:
    """Every image in ``folder`` and its subfolders, hidden ones skipped, in a fixed order."""
    found = list_images(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p)):
        found += _images_under(sub)
    return found


def prediction_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The images to predict: each file as given, and for a folder every image in it and its
    subfolders, so a whole test split is one argument; an image given twice (a folder and a
    file in it) is predicted once."""
    images: dict[Path, Path] = {}  # by resolved path, in the order given
    for path in map(Path, paths):
        found = _images_under(path) if path.is_dir() else [path]
        if not found:
            raise ValueError(
                f"{path}: no images in this folder or its subfolders "
                f"({', '.join(IMAGE_SUFFIXES)}); give image files or a folder of them"
            )
        for image in found:
            images.setdefault(image.resolve(), image)
    return list(images.values())


def heatmap_names(images: Sequence[Path]) -> list[Path]:
    """Each image's heatmap, relative to the output folder: its path under the folder that
    holds every input, named ``<stem>_heatmap.png`` (``<name>_heatmap.png`` where inputs in one
    folder share a stem, as 000.png and 000.jpg do), so distinct inputs never overwrite each
    other: test/good/000.png and test/crack/000.png give good/ and crack/000_heatmap.png."""
    absolute = [Path(os.path.abspath(path)) for path in images]
    common = Path(os.path.commonpath([path.parent for path in absolute]))
    relative = [path.relative_to(common) for path in absolute]
    stems = Counter(path.with_suffix("") for path in relative)
    return [
        path.parent / f"{path.stem if stems[path.with_suffix('')] == 1 else path.name}_heatmap.png"
        for path in relative
    ]


def predict(
    checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path, device: str = "auto"
) -> list[dict[str, Any]]:
    """Anomaly maps and scores for new images (files, or folders of them): a heatmap each
    (named by :func:`heatmap_names`), ``scores.json`` and the raw maps in ``maps.npz`` (at
    model resolution)."""
    out_dir = require_output_folder(out_dir)
    images = prediction_inputs(images)
    if not images:
        raise ValueError("predict needs at least one image")
    torch_device = resolve_device(device, DEVICE_OPTION)
    model, config = model_from_checkpoint(load_checkpoint(checkpoint), source=checkpoint)
    model.to(torch_device)
    size = (config.data.image_size, config.data.image_size)
    arrays = [resize_rgb(read_rgb(path), size) for path in images]
    tensor = torch.stack(
        [torch.from_numpy(a.transpose(2, 0, 1).copy()).float() / 255 for a in arrays]
    )
    maps, scores = infer(
        model, batches(tensor, config.train.batch_size), torch_device, config.train.amp
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    vmin, vmax = float(maps.min()), float(maps.max())  # one scale for all, so maps compare
    names = heatmap_names(images)
    for path, name, array, anomaly_map, score in zip(
        images, names, arrays, maps, scores, strict=True
    ):
        write_png(out_dir / name, heatmap_overlay(array, anomaly_map, vmin, vmax))
        results.append({"image": str(path), "heatmap": str(name), "score": float(score)})
    (out_dir / "scores.json").write_text(json.dumps(results, indent=2) + "\n")
    np.savez_compressed(out_dir / "maps.npz", maps=maps, images=np.array([str(p) for p in images]))
    return results
