"""``fit``: train a method, choosing the tested epoch by the selection protocol, with atomic,
resumable checkpoints. Stand-alone training and a study trial run this same loop; they differ
only in their per-epoch callbacks (a progress line here, a Ray Tune report in a study)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pagmfr.config import Config
from pagmfr.engine.checkpoints import (
    RESUME_KEYS,
    RESUME_ONLY,
    START_OVER,
    check_resumable,
    checkpoint_name,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from pagmfr.engine.data import prepare_training
from pagmfr.engine.inference import anomaly_metrics, batches, infer
from pagmfr.engine.runtime import (
    autocast,
    grad_scaler,
    make_scheduler,
    peak_memory_mb,
    resolve_device,
    seed_everything,
    set_determinism,
    to_device,
)
from pagmfr.files import copy_atomically, require_output_folder
from pagmfr.logs import log
from pagmfr.models import AnomalyMethod, build_model
from pagmfr.models.feature_cache import FeatureCache
from pagmfr.provenance import code_version


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf: the run stops and says where."""


@dataclass
class EpochReport:
    """What a per-epoch callback receives."""

    epoch: int
    metrics: dict[str, float]
    is_best: bool
    #: The run's final epoch (a training-free method has one).
    is_last: bool
    checkpoint_dir: Path
    #: The epoch this process resumed training at (0: it started from scratch).
    resumed_from: int
    model: AnomalyMethod


Callback = Callable[[EpochReport], None]


@dataclass
class FitResult:
    """Where a fit left its checkpoints, the selected epoch and the per-epoch history."""

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def progress_callback(report: EpochReport) -> None:
    """Stand-alone training's callback: one line per epoch."""
    metrics = report.metrics
    shown = "  ".join(
        f"{k} {metrics[k]:.4f}"
        for k in ("loss", "val_au_pro", "val_pixel_auroc", "val_image_auroc")
        if k in metrics
    )
    log(
        f"epoch {report.epoch + 1:>4}  {shown}  {metrics['epoch_seconds']:.1f}s"
        + ("  *best" if report.is_best else "")
    )


class TrainingRun:
    """One fit in progress: the model, its optimiser and schedule, the data, the selection
    record, and the steps of the loop, each a method."""

    def __init__(self, config: Config, out_dir: Path):
        self.config, self.out_dir = config, require_output_folder(out_dir)
        set_determinism(config.train.deterministic)  # before CUDA starts: cuBLAS reads it then
        self.device = resolve_device(config.train.device)
        seed_everything(config.train.seed)
        self.setup = prepare_training(config)
        log(f"validation images: {self.setup.validation_images}")
        self.prefix = "test_" if config.validation.on_test else "val_"
        self.model = build_model(config).to(self.device)
        if self.model.trains and config.train.feature_cache_mb > 0:
            self.model.feature_cache = FeatureCache(config.train.feature_cache_mb)
        if self.device.type == "cuda" and config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.epochs = config.train.epochs if self.model.trains else 1
        self.optimizer = (
            self.model.configure_optimizer(config.train.lr, config.train.weight_decay)
            if self.model.trains
            else None
        )
        self.scheduler = make_scheduler(self.optimizer, config) if self.optimizer else None
        self.scaler = grad_scaler(self.device, config.train.amp)
        self.start_epoch, self.epoch_started = 0, 0.0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"epoch": -1, "score": -math.inf, "metrics": {}}

    def path(self, which: str) -> Path:
        """This run's ``last`` or ``best`` checkpoint file."""
        return checkpoint_path(self.out_dir, self.config, which)

    # ---- before the first epoch ----

    def resume_or_prepare(self, resume: bool | str | Path) -> None:
        """Resume from the last checkpoint of ``resume`` (True: this run's checkpoint folder;
        a path: another folder, e.g. a Ray Tune checkpoint restored after a node failure);
        otherwise start afresh and let the method fit what it needs from clean images."""
        folder = self.path("last").parent if resume is True else resume
        last = Path(folder) / checkpoint_name(self.config, "last") if folder else None
        if last is None or not last.is_file():
            self.model.prepare(self.setup.clean_batches(self.config.train.batch_size))
            self.calibrate()
            return
        state = load_checkpoint(last, needs=RESUME_KEYS, fix=START_OVER)
        check_resumable(state, self.config, last)
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch = state["epoch"] + 1
        with torch.no_grad():  # the features the uninterrupted run cached in prepare()
            self.model.cache_training_features(
                self.setup.clean_batches(self.config.train.batch_size)
            )
        self.history, self.best = list(state["history"]), dict(state["best"])
        best = last.with_name(checkpoint_name(self.config, "best"))
        if best.is_file() and best != self.path("best"):
            copy_atomically(best, self.path("best"))
        log(f"resuming {last} after epoch {self.start_epoch}")

    # ---- one epoch ----

    def _loader(self, epoch: int) -> DataLoader:
        train, train_set = self.config.train, self.setup.train_set
        train_set.epoch = epoch  # each sample's randomness depends on (seed, epoch, index)
        return DataLoader(
            train_set,
            batch_size=train.batch_size,
            shuffle=True,
            drop_last=len(train_set) > train.batch_size,
            num_workers=self.config.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(train.seed * 100_003 + epoch),
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training samples: the mean loss, its parts and the rate used."""
        if self.optimizer is None:  # training-free: prepare() did all the fitting
            return {}
        train = self.config.train
        loader = self._loader(epoch)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(loader):
            batch = to_device(
                batch, self.device, train.channels_last and self.device.type == "cuda"
            )
            with autocast(self.device, train.amp):
                loss, parts = self.model.training_loss(batch)
            self._check_finite(loss, parts, epoch, step)
            self.scaler.scale(loss / train.grad_accumulation).backward()
            if (step + 1) % train.grad_accumulation == 0 or step + 1 == len(loader):
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            for name, value in {"loss": loss, **{f"loss/{k}": v for k, v in parts.items()}}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().double()
        metrics = {name: float(total) / max(len(loader), 1) for name, total in sums.items()}
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return metrics

    def calibrate(self) -> None:
        """The method's refit on the clean training images (``AnomalyMethod.calibrate``), in
        eval mode without gradients: before the first epoch and before every validation."""
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.config.train.amp):
            self.model.calibrate(self.setup.clean_batches(self.config.train.batch_size))

    @staticmethod
    def _check_finite(loss: torch.Tensor, parts: dict, epoch: int, step: int) -> None:
        if torch.isfinite(loss):
            return
        shown = ", ".join(f"{k} {float(torch.as_tensor(v).detach()):.4g}" for k, v in parts.items())
        raise NonFiniteLossError(
            f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} ({shown}); "
            "lower train.lr, check the loss weights, or check the data"
        )

    def _check_finite_outputs(self, maps: np.ndarray, scores: np.ndarray, epoch: int) -> None:
        """A finite loss can still leave NaN weights after the epoch's last step: name the
        cause here, not as "scores contain NaN" in the metrics."""
        if np.isfinite(scores).all() and np.isfinite(maps).all():
            return
        raise NonFiniteLossError(
            f"the model's anomaly maps are NaN or infinite after epoch {epoch + 1}: training "
            f"diverged; lower train.lr (now {self.config.train.lr:g}) or check the loss weights"
        )

    def validate(self, epoch: int) -> tuple[dict[str, float], bool]:
        """Metrics on the validation set (every ``eval_every`` epochs and at the end), and
        whether the selection protocol (``validation.select``) chooses this epoch so far."""
        train = self.config.train
        if (epoch + 1) % train.eval_every and epoch + 1 != self.epochs:
            return {}, False
        self.calibrate()
        images = batches(self.setup.images, train.batch_size)
        maps, scores = infer(self.model, images, self.device, train.amp)
        self._check_finite_outputs(maps, scores, epoch)
        measured = anomaly_metrics(maps, self.setup.masks, scores, self.setup.labels)
        metrics = {self.prefix + k: v for k, v in measured.items()}
        return metrics, self._selects(epoch, measured, metrics)

    def _selects(self, epoch: int, measured: dict[str, float], metrics: dict[str, float]) -> bool:
        """``last`` chooses the final epoch; ``val_<metric>`` (``test_<metric>``) the first
        epoch with the highest value of that metric."""
        metric = self.config.validation.metric
        if metric is None:
            chosen, score = epoch + 1 == self.epochs, float(epoch)
        else:
            score = measured[metric]
            chosen = score > self.best["score"]
        if chosen:
            self.best = {"epoch": epoch, "score": score, "metrics": metrics}
        return chosen

    def checkpoint(self, epoch: int, metrics: dict[str, float], is_best: bool) -> None:
        """``last`` every epoch (for resuming); ``best`` when the epoch is the best."""
        self.history.append({"epoch": epoch, **metrics})
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "epoch": epoch,
            "config": self.config.to_flat(),
            "metrics": metrics,
            "best": self.best,
            "history": self.history,
            "selection": self.config.validation.select,
            "code_version": code_version(),
            "data_fingerprint": self.setup.fingerprint,
            "validation_images": self.setup.validation_images,
        }
        if is_best:
            save_checkpoint(
                {k: v for k, v in state.items() if k not in RESUME_ONLY}, self.path("best")
            )
        save_checkpoint(state, self.path("last"))

    def start_clock(self) -> None:
        """Start timing an epoch (and its peak GPU memory)."""
        self.epoch_started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def costs(self) -> dict[str, float]:
        """The epoch's wall time and peak memory."""
        return {
            "epoch_seconds": time.perf_counter() - self.epoch_started,
            "peak_memory_mb": peak_memory_mb(self.device),
        }

    def report(self, epoch: int, metrics: dict[str, float], is_best: bool) -> EpochReport:
        """What the callbacks see of this epoch."""
        last = epoch + 1 == self.epochs
        folder = self.path("last").parent
        return EpochReport(epoch, metrics, is_best, last, folder, self.start_epoch, self.model)

    def step(self, epoch: int) -> EpochReport:
        """One whole epoch: train, validate, checkpoint. Several runs can be stepped in
        lockstep (an HPO trial over several categories reports their mean every epoch)."""
        self.start_clock()
        metrics = self.train_epoch(epoch)
        measured, is_best = self.validate(epoch)
        metrics.update(measured, **self.costs())
        self.checkpoint(epoch, metrics, is_best)
        return self.report(epoch, metrics, is_best)

    def result(self, seconds: float) -> FitResult:
        """The fit's outcome after ``seconds`` of training."""
        return FitResult(
            self.out_dir,
            self.path("best"),
            self.path("last"),
            self.best["epoch"],
            self.best["metrics"],
            self.history,
            seconds,
        )


def fit(
    config: Config,
    out_dir: str | Path,
    callbacks: Sequence[Callback] = (progress_callback,),
    resume: bool | str | Path = True,
) -> FitResult:
    """Train ``config`` into ``out_dir``, choosing the epoch to test by ``validation.select``:
    the last one, or the best on a validation metric (or, only when asked, a test metric).

    Args:
        config: a validated config.
        out_dir: where ``checkpoints/`` go.
        callbacks: called after every epoch with an :class:`EpochReport`.
        resume: True resumes from ``out_dir``'s last checkpoint when there is one; a folder
            resumes from the last checkpoint there (a restored Ray Tune checkpoint); False
            starts afresh. A resumed run ends exactly where an uninterrupted one would.

    Returns:
        A :class:`FitResult`: checkpoint paths, the selected epoch, its metrics, the history.
    """
    run = start_fit(config, out_dir, resume)
    started = time.perf_counter()
    for epoch in range(run.start_epoch, run.epochs):
        report = run.step(epoch)
        for callback in callbacks:
            callback(report)
    return run.result(time.perf_counter() - started)


def start_fit(config: Config, out_dir: str | Path, resume: bool | str | Path = True) -> TrainingRun:
    """A :class:`TrainingRun` ready for its first epoch (resumed as :func:`fit` explains), for
    a caller that steps the epochs itself."""
    run = TrainingRun(config, Path(out_dir))
    run.resume_or_prepare(resume)
    return run
