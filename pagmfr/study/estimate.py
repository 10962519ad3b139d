"""What a study will cost, before it runs: its cells, the resources per trial, GPU-hours from a
measured epoch time, and the storage its checkpoints take (``studies/ablation.py --dry-run``).

Time and storage are measured, not guessed: :func:`calibrate` trains one cell of each method
for a few epochs as a Ray task with that method's trial resources (so on the cluster's GPUs),
and keeps the time per epoch, the peak memory and the size of the checkpoints it wrote. An
epoch's time scales with the category's training images, counted from the data.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass

import ray

from pagmfr.config import Config
from pagmfr.data.dataset import MVTecAD
from pagmfr.data.layout import validation_split
from pagmfr.data.pipeline import resolve_data_root, validation_count
from pagmfr.registry import MethodSpec, ensure_registered, user_methods
from pagmfr.study.cells import Cell, StudyGrid
from pagmfr.study.options import StudyOptions
from pagmfr.study.ray_cluster import check_gpu_requests, init_ray
from pagmfr.study.spec import TrialSpec
from pagmfr.study.tuning import shippable_methods

#: Epochs a calibration trains; the first (loading data, warming up) is not timed.
CALIBRATION_EPOCHS = 3
_MB = 2**20


@dataclass(frozen=True)
class Calibration:
    """One method's measured cost, from a few epochs of one of its cells."""

    method: str
    cell: str
    train_images: int
    epoch_seconds: float
    device: str
    peak_memory_mb: float
    #: Checkpoint sizes: ``last`` (for resuming: with optimiser state) and ``best``.
    last_mb: float
    best_mb: float
    #: The whole fit's wall time: what a training-free method's cell costs (its ``prepare``,
    #: the memory bank, comes before its single epoch).
    fit_seconds: float = 0.0
    #: False for a training-free method: its cells fit once, whatever ``train.epochs`` says.
    trains: bool = True

    def cell_seconds(self, epochs: int, train_images: int) -> float:
        """A cell's time: ``epochs`` epochs (or one fit, training-free) on a category with
        ``train_images`` training images."""
        seconds = epochs * self.epoch_seconds if self.trains else self.fit_seconds
        return seconds * train_images / self.train_images

    def describe(self) -> str:
        """One line of the dry run: what was measured."""
        speed = (
            f"{self.epoch_seconds:.2f} s/epoch"
            if self.trains
            else f"{self.fit_seconds:.2f} s per fit (training-free)"
        )
        return (
            f"{self.method}: {self.cell} on {self.device}, {speed} for {self.train_images} "
            f"training images, peak memory {self.peak_memory_mb:,.0f} MB, checkpoints last "
            f"{_size(self.last_mb)} + best {_size(self.best_mb)}"
        )


def _time_epochs(spec: TrialSpec, epochs: int, methods: list[MethodSpec]) -> dict:
    """Train a cell for ``epochs`` epochs in a scratch folder; runs as a Ray task."""
    import torch

    from pagmfr.engine import checkpoint_path, fit

    ensure_registered(methods)
    config = Config.from_flat(spec.config).with_overrides({"train.epochs": epochs})
    reports = []
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        fit(config, folder, callbacks=(lambda report: reports.append(report.metrics),))
        fit_seconds = time.perf_counter() - started
        sizes = {w: checkpoint_path(folder, config, w).stat().st_size for w in ("last", "best")}
    timed = reports[1:] or reports  # a training-free method has one epoch
    return {
        "trains": len(reports) == epochs,
        "fit_seconds": fit_seconds,
        "epoch_seconds": statistics.median(r["epoch_seconds"] for r in timed),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in reports),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "last_mb": sizes["last"] / _MB,
        "best_mb": sizes["best"] / _MB,
    }


def train_images(config: Config) -> int:
    """The training images of a cell's category: all of them where the layout has its own
    validation images, else less the validation share held out."""
    data = config.data
    root = resolve_data_root(str(data.root))
    count = len(MVTecAD(root, data.category, "train", 32))
    if validation_split(root, data.category, data.validation_images) is not None:
        return count
    return count - validation_count(count, data.val_fraction)


def calibrate(
    cells: list[Cell],
    resources: dict[str, dict[str, float]],
    methods: list[MethodSpec],
    epochs: int = CALIBRATION_EPOCHS,
) -> dict[str, Calibration]:
    """Time ``epochs`` epochs of the first cell of each method, all at once, each as a Ray task
    with ``resources[method]`` (``{"num_cpus": .., "num_gpus": ..}``): on the cluster Ray is
    connected to, on the hardware the study's trials get."""
    first = {}
    for cell in cells:
        first.setdefault(cell.method, cell)
    task = ray.remote(_time_epochs)
    pending = {
        method: task.options(**resources[method]).remote(cell.spec(), epochs, methods)
        for method, cell in first.items()
    }
    return {
        method: Calibration(
            method, first[method].name, train_images(first[method].config), **ray.get(ref)
        )
        for method, ref in pending.items()
    }


def _size(mb: float) -> str:
    return f"{mb / 1024:,.1f} GB" if mb >= 1024 else f"{mb:,.0f} MB"


def describe(
    cells: list[Cell],
    gpus: dict[str, float],
    cpus: float,
    calibrations: dict[str, Calibration] | None,
    checkpoint_every: int,
) -> str:
    """The dry run's report: every cell, the resources per trial, and with calibrations the
    GPU-hours and the storage."""
    variants = {c.variant for c in cells}
    categories = {c.category for c in cells}
    seeds = {c.seed for c in cells}
    lines = [
        f"{len(cells)} cells: {len(variants)} variants x {len(categories)} categories x "
        f"{len(seeds)} seeds",
        *(f"  {c.name}  [{c.method}, key {c.key[:8]}]" for c in cells),
        "resources per trial: "
        + ", ".join(f"{m}: {cpus:g} CPU, {gpus[m]:g} GPU" for m in sorted(gpus)),
        "code each method's cells are keyed by (a change elsewhere retrains nothing): "
        + ", ".join(sorted({f"{c.method} {c.code}" for c in cells})),
    ]
    if not calibrations:
        lines.append(
            "GPU-hours and storage: not measured; add --calibrate to train "
            f"{CALIBRATION_EPOCHS} epochs of one cell per method with its trial resources"
        )
        return "\n".join(lines)
    lines.append(f"measured ({CALIBRATION_EPOCHS} epochs of one cell per method, first untimed):")
    lines += [f"  {cal.describe()}" for _, cal in sorted(calibrations.items())]
    images = {c.category: train_images(c.config) for c in cells}
    trial_hours = gpu_hours = kept_mb = uploaded_mb = best_mb = 0.0
    for cell in cells:
        cal = calibrations[cell.method]
        epochs = cell.config.train.epochs if cal.trains else 1
        hours = cal.cell_seconds(epochs, images[cell.category]) / 3600
        trial_hours += hours
        gpu_hours += hours * gpus[cell.method]
        checkpoint_mb = cal.last_mb + cal.best_mb
        kept_mb += checkpoint_mb
        uploaded_mb += (epochs // checkpoint_every + 1) * checkpoint_mb
        best_mb += cal.best_mb
    lines += [
        f"time: {trial_hours:,.2f} trial-hours; {gpu_hours:,.2f} GPU-hours (each trial's hours x "
        "its GPU share: trials sharing a GPU can slow each other down)",
        f"storage: cells folder (last + best per cell, kept) {_size(kept_mb)}; Tune storage "
        f"keeps one checkpoint per running trial, written every {checkpoint_every} epochs: "
        f"{_size(uploaded_mb)} written over the study; MLflow: metrics and a few heatmaps per "
        f"cell, plus {_size(best_mb)} of best checkpoints with --keep-checkpoints",
    ]
    return "\n".join(lines)


def dry_run(grid: StudyGrid, options: StudyOptions, measure: bool = False) -> str:
    """What :func:`~pagmfr.study.ablation.run_ablation` would run, without running it; with
    ``measure``, on the cluster :func:`~pagmfr.study.ray_cluster.init_ray` joins,
    calibrated."""
    cells = grid.cells()
    gpus = {cell.method: options.gpus().of(cell.method) for cell in cells}
    calibrations = None
    if measure:
        init_ray()
        check_gpu_requests(options.gpus_per_trial, ray.cluster_resources().get("GPU", 0))
        cpus = options.cpus_per_trial
        resources = {m: {"num_cpus": cpus, "num_gpus": g} for m, g in gpus.items()}
        calibrations = calibrate(cells, resources, shippable_methods(user_methods()))
    return describe(cells, gpus, options.cpus_per_trial, calibrations, options.checkpoint_every)
