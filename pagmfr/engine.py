"""One training and evaluation loop for every method: fit, evaluate, predict, train.

Stand-alone training and a study trial run the same :func:`fit`; they differ only in the
per-epoch callbacks they pass (a progress line here, a Ray Tune report in the study layer), so
this module never imports Ray.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pagmfr import metrics as M
from pagmfr.anomalies import make_generator
from pagmfr.config import Config
from pagmfr.data.dataset import MVTecAD, image_to_tensor
from pagmfr.data.images import read_mask, read_rgb, resize_rgb, write_png
from pagmfr.data.pipeline import (
    PseudoAnomalyTrainSet,
    resolve_data_root,
    split_train_validation,
    validation_set,
)
from pagmfr.models import build_model
from pagmfr.provenance import code_version, environment
from pagmfr.visualize import comparison_row, heatmap_overlay

TEST_METRICS = ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf: the run stops and says where."""


@dataclass
class EpochReport:
    """What a per-epoch callback receives."""

    epoch: int
    metrics: dict[str, float]
    is_best: bool
    checkpoint_dir: Path
    model: nn.Module


Callback = Callable[[EpochReport], None]


@dataclass
class FitResult:
    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


# ---- setup ----


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {spec!r} but CUDA is not available; use auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_path(out_dir: Path, config: Config, which: str) -> Path:
    """``<out>/checkpoints/<method>_<category>_<best|last>.pt``: predictable, per category."""
    return Path(out_dir) / "checkpoints" / f"{config.method}_{config.data.category}_{which}.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, then rename: a process killed mid-write (a lost node, a
    killed driver) leaves the previous checkpoint intact, never a truncated one."""
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(
    checkpoint: dict[str, Any], overrides: dict[str, Any] | None = None
) -> tuple[nn.Module, Config]:
    config = Config.from_flat(checkpoint["config"])
    if overrides:
        config = config.with_overrides(overrides)
    model = build_model(config, load_weights=False)  # every weight comes from the checkpoint
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: Config
) -> torch.optim.lr_scheduler.LRScheduler:
    t = config.train
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
    if config.scheduler == "warmup_linear":
        warmup = min(t.warmup_epochs, t.epochs - 1)

        def factor(epoch: int) -> float:  # linear warm-up to the base rate, then linear decay
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            return max(0.0, (t.epochs - epoch) / max(t.epochs - warmup, 1))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _to_device(
    batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool
) -> dict[str, torch.Tensor]:
    moved = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if channels_last and value.ndim == 4 and value.shape[1] == 3:
            value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


# ---- inference and metrics ----


@torch.no_grad()
def infer(
    model: nn.Module, images: Iterable[torch.Tensor], device: torch.device, amp: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps (N, H, W) and scores (N,) for batches of images in [0, 1]."""
    model.eval()
    maps, scores = [], []
    for batch in images:
        with _autocast(device, amp):
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
        "au_pro": M.au_pro(maps, masks),
        "pixel_f1_max": M.f1_max(maps, masks),
    }


def _batches(tensor: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    return (tensor[i : i + size] for i in range(0, len(tensor), size))


def _dataset_batches(dataset: MVTecAD, size: int) -> Iterable[torch.Tensor]:
    loader = DataLoader(dataset, batch_size=size, shuffle=False, num_workers=0)
    return (batch["image"] for batch in loader)


def _test_arrays(dataset: MVTecAD) -> tuple[np.ndarray, np.ndarray]:
    masks = np.stack([dataset.load_arrays(i)[1] for i in range(len(dataset))])
    return masks, dataset.labels


# ---- fit ----


@dataclass
class TrainingSetup:
    """The data side of a run: training samples and the fixed set the best epoch is chosen on."""

    train_set: PseudoAnomalyTrainSet
    selection: str  # "validation" (held-out train/good) or "test" (only when asked)
    images: torch.Tensor  # (N, 3, H, W)
    masks: np.ndarray  # (N, H, W) bool
    labels: np.ndarray  # (N,)
    fingerprint: str

    def clean_batches(self, batch_size: int) -> Iterable[torch.Tensor]:
        """The training images without pseudo-anomalies, e.g. for RGPKD's prompt bank."""
        data, indices = self.train_set.base, self.train_set.indices
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            yield torch.stack([image_to_tensor(data.load_arrays(i)[0]) for i in chunk])


def prepare_training(config: Config) -> TrainingSetup:
    """Split train/good into training and validation images, build the seeded generators, and
    fix the selection set: validation images with pseudo-anomalies from ``validation.strategy``
    (or the test split, only with ``validation.select_on_test``)."""
    seed, g = config.train.seed, config.generator
    root = resolve_data_root(config.data.root)
    train_data = MVTecAD(
        root, config.data.category, "train", config.data.image_size, kind=config.data.kind
    )
    train_idx, val_idx = split_train_validation(len(train_data), config.data.val_fraction, seed)
    kind = train_data.kind
    strategy = g.strategy if config.uses_pseudo_anomalies else "none"
    generator = make_generator(
        strategy,
        kind,
        g.texture_dir,
        g.object_dir,
        config.data.image_size,
        seed,
        **config.generator_knobs(),
    )
    train_set = PseudoAnomalyTrainSet(train_data, train_idx, generator)
    if config.validation.select_on_test:
        test_data = MVTecAD(root, config.data.category, "test", config.data.image_size, kind=kind)
        masks, labels = _test_arrays(test_data)
        images = torch.stack([test_data[i]["image"] for i in range(len(test_data))])
        return TrainingSetup(train_set, "test", images, masks, labels, train_data.fingerprint())
    validator = make_generator(
        config.validation.strategy,
        kind,
        g.texture_dir,
        g.object_dir,
        config.data.image_size,
        seed + 1,
        normal_probability=0.0,
    )
    images, mask_tensor = validation_set(train_data, val_idx, validator)
    masks = mask_tensor[:, 0].numpy() > 0
    labels = masks.any(axis=(1, 2)).astype(np.int64)
    return TrainingSetup(train_set, "validation", images, masks, labels, train_data.fingerprint())


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress_callback(report: EpochReport) -> None:
    """Stand-alone training's callback: one line per epoch."""
    m = report.metrics
    shown = "  ".join(
        f"{k} {m[k]:.4f}"
        for k in ("loss", "val_au_pro", "val_pixel_auroc", "val_image_auroc")
        if k in m
    )
    _log(
        f"epoch {report.epoch + 1:>4}  {shown}  {m['epoch_seconds']:.1f}s"
        + ("  *best" if report.is_best else "")
    )


def _check_resumable(checkpoint: dict[str, Any], config: Config, path: Path) -> None:
    saved, current = dict(checkpoint["config"]), config.to_flat()
    for key in ("train.epochs",):  # extending a finished run is allowed
        saved.pop(key, None)
        current.pop(key, None)
    differing = sorted(k for k in current if saved.get(k) != current[k])
    if differing:
        raise ValueError(
            f"{path} was written with a different config ({', '.join(differing[:5])}); "
            "use a new output folder or turn resuming off"
        )


def fit(
    config: Config,
    out_dir: str | Path,
    callbacks: Sequence[Callback] = (progress_callback,),
    resume: bool = True,
) -> FitResult:
    """Train ``config`` into ``out_dir``, selecting the best epoch on the held-out validation set
    (or, only when ``validation.select_on_test`` is set, on the test set). Resumes from
    ``last.pt`` when one exists; a resumed run ends exactly where an uninterrupted one would."""
    out_dir = Path(out_dir)
    t = config.train
    device = resolve_device(t.device)
    seed_everything(t.seed)
    setup = prepare_training(config)
    train_set = setup.train_set
    prefix = "test_" if setup.selection == "test" else "val_"
    model = build_model(config).to(device)
    if device.type == "cuda" and t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = make_scheduler(optimizer, config)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=device.type == "cuda" and t.amp and not torch.cuda.is_bf16_supported()
    )

    last_path, best_path = (
        checkpoint_path(out_dir, config, "last"),
        checkpoint_path(out_dir, config, "best"),
    )
    start_epoch, history = 0, []
    best = {"epoch": -1, "score": -math.inf, "metrics": {}}
    if resume and last_path.is_file():
        state = load_checkpoint(last_path)
        _check_resumable(state, config, last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history, best = state["epoch"] + 1, list(state["history"]), dict(state["best"])
        _log(f"resuming {last_path} after epoch {start_epoch}")
    elif hasattr(model, "prepare"):  # e.g. RGPKD's prompt bank; a resumed model has it already
        model.prepare(setup.clean_batches(t.batch_size))
    last_path.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    for epoch in range(start_epoch, t.epochs):
        epoch_start = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        train_set.epoch = epoch
        loader = DataLoader(
            train_set,
            batch_size=t.batch_size,
            shuffle=True,
            drop_last=len(train_set) > t.batch_size,
            num_workers=config.data.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(t.seed * 100_003 + epoch),
        )
        model.train()
        sums: dict[str, float] = {}
        steps = 0
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(loader):
            batch = _to_device(batch, device, t.channels_last and device.type == "cuda")
            with _autocast(device, t.amp):
                loss, parts = model.training_loss(batch)
            if not torch.isfinite(loss):
                shown = ", ".join(f"{k} {v:.4g}" for k, v in parts.items())
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} ({shown}); "
                    "lower train.lr, check the loss weights, or check the data"
                )
            scaler.scale(loss / t.grad_accumulation).backward()
            if (step + 1) % t.grad_accumulation == 0 or step + 1 == len(loader):
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        metrics = {k: v / max(steps, 1) for k, v in sums.items()}
        metrics["lr"] = lr
        is_best = False
        if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
            maps, scores = infer(model, _batches(setup.images, t.batch_size), device, t.amp)
            measured = anomaly_metrics(maps, setup.masks, scores, setup.labels)
            metrics.update({prefix + k: v for k, v in measured.items()})
            score = measured[config.validation.metric]
            if score > best["score"]:
                best = {
                    "epoch": epoch,
                    "score": score,
                    "metrics": {prefix + k: v for k, v in measured.items()},
                }
                is_best = True
        metrics["epoch_seconds"] = time.perf_counter() - epoch_start
        metrics["peak_memory_mb"] = _peak_memory_mb(device)
        history.append({"epoch": epoch, **metrics})
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "config": config.to_flat(),
            "metrics": metrics,
            "best": best,
            "history": history,
            "selection": setup.selection,
            "code_version": code_version(),
            "data_fingerprint": setup.fingerprint,
        }
        if is_best:
            save_checkpoint(state, best_path)
        save_checkpoint(state, last_path)
        for callback in callbacks:
            callback(EpochReport(epoch, metrics, is_best, last_path.parent, model))
    return FitResult(
        out_dir,
        best_path,
        last_path,
        best["epoch"],
        best["metrics"],
        history,
        time.perf_counter() - started,
    )


# ---- evaluate, predict, train ----


def _full_resolution(dataset: MVTecAD, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps upsampled to each image's original size, with the original masks."""
    import cv2

    full_maps, full_masks = [], []
    for sample, anomaly_map in zip(dataset.samples, maps, strict=True):
        height, width = read_rgb(sample.image).shape[:2]
        full_maps.append(cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR))
        full_masks.append(
            np.zeros((height, width), bool) if sample.mask is None else read_mask(sample.mask)
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


def evaluate(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    category: str | None = None,
    out_dir: str | Path | None = None,
    full_resolution: bool = False,
    heatmaps: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Image AUROC, pixel AUROC, AU-PRO and pixel F1-max of a checkpoint on a test split, at
    model resolution (or the images' own with ``full_resolution``), written to metrics.json
    with the config, seed, code version and data fingerprint."""
    state = load_checkpoint(checkpoint)
    overrides = {
        k: v
        for k, v in {"data.root": data_root, "data.category": category}.items()
        if v is not None
    }
    model, config = model_from_checkpoint(state, {k: str(v) for k, v in overrides.items()})
    torch_device = resolve_device(device)
    model.to(torch_device)
    test = MVTecAD(
        resolve_data_root(config.data.root),
        config.data.category,
        "test",
        config.data.image_size,
        kind=config.data.kind,
    )
    started = time.perf_counter()
    maps, scores = infer(
        model, _dataset_batches(test, config.train.batch_size), torch_device, config.train.amp
    )
    inference_seconds = time.perf_counter() - started
    masks, labels = _test_arrays(test)
    eval_maps, eval_masks = _full_resolution(test, maps) if full_resolution else (maps, masks)
    result: dict[str, Any] = anomaly_metrics(eval_maps, eval_masks, scores, labels)
    result.update(
        {
            "resolution": "full" if full_resolution else f"{config.data.image_size}px",
            "test_images": len(test),
            "inference_seconds": inference_seconds,
            "selection": state.get("selection", "validation"),
            "best_epoch": state["epoch"],
            "selection_metrics": state["best"]["metrics"],
            "checkpoint": str(checkpoint),
            "seed": config.train.seed,
            "config": config.to_flat(),
            "code_version": code_version(),
            "trained_with_code_version": state.get("code_version"),
            "data_fingerprint": test.fingerprint(),
            "train_data_fingerprint": state.get("data_fingerprint"),
            "environment": environment(),
        }
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        if heatmaps:
            _write_heatmaps(out_dir, test, maps)
    return result


def predict(
    checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path, device: str = "auto"
) -> list[dict[str, Any]]:
    """Anomaly maps and scores for new images: ``<stem>_heatmap.png`` each, ``scores.json``
    and the raw maps in ``maps.npz`` (at model resolution)."""
    if not images:
        raise ValueError("predict needs at least one image")
    model, config = model_from_checkpoint(load_checkpoint(checkpoint))
    torch_device = resolve_device(device)
    model.to(torch_device)
    size = (config.data.image_size, config.data.image_size)
    arrays = [resize_rgb(read_rgb(path), size) for path in images]
    tensor = torch.stack(
        [torch.from_numpy(a.transpose(2, 0, 1).copy()).float() / 255 for a in arrays]
    )
    maps, scores = infer(
        model, _batches(tensor, config.train.batch_size), torch_device, config.train.amp
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    vmin, vmax = float(maps.min()), float(maps.max())  # one scale for all, so maps compare
    for path, array, anomaly_map, score in zip(images, arrays, maps, scores, strict=True):
        write_png(
            out_dir / f"{Path(path).stem}_heatmap.png",
            heatmap_overlay(array, anomaly_map, vmin, vmax),
        )
        results.append({"image": str(path), "score": float(score)})
    (out_dir / "scores.json").write_text(json.dumps(results, indent=2) + "\n")
    np.savez_compressed(out_dir / "maps.npz", maps=maps, images=np.array([str(p) for p in images]))
    return results


def train(
    config: Config,
    out_dir: str | Path,
    callbacks: Sequence[Callback] = (progress_callback,),
    resume: bool = True,
    full_resolution: bool = False,
) -> dict[str, Any]:
    """Fit, then evaluate the selected checkpoint on the test split: ``<out>/metrics.json``."""
    result = fit(config, out_dir, callbacks, resume)
    metrics = evaluate(
        result.best_checkpoint,
        out_dir=out_dir,
        full_resolution=full_resolution,
        device=config.train.device,
    )
    metrics["timings"] = {
        "train_seconds": result.train_seconds,
        "epochs": len(result.history),
        "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in result.history]))
        if result.history
        else 0.0,
        "inference_seconds": metrics["inference_seconds"],
    }
    metrics["history"] = result.history
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
