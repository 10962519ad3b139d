"""The Ray Tune trainable: one study cell (or HPO trial) through the engine's training loop.

It reports every epoch, with a checkpoint every ``checkpoint_every`` epochs and at most one a
minute (so a trial on a lost node resumes from there on another), then evaluates the selected
checkpoint on the test split and reports the test metrics with the artifacts the driver
records in MLflow. A result
is ``{"epoch": e, "metrics": {...}}``: the driver records ``metrics`` and nothing of Tune's.

An HPO trial holds one cell per category of the search and trains them in lockstep: each
epoch reports the mean over the categories (the objective ASHA and Optuna see) and each
category's validation metrics (``val_au_pro/carpet``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from pagmfr.config import Config
from pagmfr.engine import TEST_METRICS, TrainingRun, checkpoint_path, evaluate, start_fit
from pagmfr.errors import travelling_errors
from pagmfr.registry import MethodSpec, ensure_registered
from pagmfr.study.cells import cell_dir
from pagmfr.study.search_plan import SearchPlan
from pagmfr.study.spec import TrialSpec

#: Heatmaps copied into the final artifacts (a few per defect type).
HEATMAPS_PER_DEFECT = 2
#: The least time between two checkpoints of a trial (a lost node loses at most this much).
CHECKPOINT_SECONDS = 60.0
#: Where a result keeps the trainable's metrics (HPO's objective is "metrics/val_au_pro").
METRICS = "metrics"
#: A final result's key for how the test measured (recorded as ``test.<name>`` tags).
PROTOCOL = "protocol"
#: What the test records of its protocol: the metrics' resolution and AU-PRO's FPR limit.
TEST_PROTOCOL = ("resolution", "au_pro_fpr_limit")


@dataclass
class TrialContext:
    """What every trial of a study gets besides its cell; Tune ships it once to each worker."""

    study: str
    cells_path: str
    checkpoint_every: int = 1
    keep_checkpoint: bool = False
    #: HPO only: turns a trial's sampled overrides into its cells.
    plan: SearchPlan | None = None
    #: Methods registered outside pagmfr (in the study script): workers register them too.
    methods: list[MethodSpec] = field(default_factory=list)


@dataclass
class CellRun:
    """One cell of a trial: its category, its training run and its working folder."""

    key: str
    category: str
    config: Config
    out_dir: Path
    run: TrainingRun | None = None


def combine(per_cell: dict[str, dict[str, float]]) -> dict[str, float]:
    """One cell's metrics as they are; several cells' as the mean of every metric they all
    have, plus each category's validation metrics (``val_au_pro/carpet``)."""
    if len(per_cell) == 1:
        return dict(next(iter(per_cell.values())))
    shared = set.intersection(*(set(m) for m in per_cell.values()))
    combined = {k: float(np.mean([m[k] for m in per_cell.values()])) for k in sorted(shared)}
    for category, metrics in per_cell.items():
        combined.update({f"{k}/{category}": v for k, v in metrics.items() if k.startswith("val_")})
    return combined


def _checkpoint(cells: list[CellRun], folder: Path) -> tune.Checkpoint:
    """Every cell's ``last`` and ``best`` files, one sub-folder per cell key."""
    for cell in cells:
        for which in ("last", "best"):
            source = checkpoint_path(cell.out_dir, cell.config, which)
            if source.is_file():
                (folder / cell.key).mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, folder / cell.key / source.name)
    return tune.Checkpoint.from_directory(folder)


def _start(cells: list[CellRun]) -> bool:
    """Start every cell's run: from Tune's checkpoint when the trial was restored (a lost
    node), else from the cell folder's own (a restarted driver), else from scratch. Returns
    whether Tune restored the trial (its driver has then recorded the epochs before)."""
    restored = tune.get_checkpoint()
    with tempfile.TemporaryDirectory() as folder:
        if restored is not None:
            restored.to_directory(folder)
        for cell in cells:
            saved = Path(folder) / cell.key
            cell.run = start_fit(
                cell.config, cell.out_dir, resume=saved if saved.is_dir() else True
            )
    return restored is not None


def _epoch_metrics(run: TrainingRun, epoch: int) -> dict[str, float]:
    """A cell's metrics of ``epoch``: measured now, or from its history when the cell had
    already passed that epoch (restored further than its sibling cells)."""
    if epoch >= run.start_epoch:
        return run.step(epoch).metrics
    return {k: v for k, v in run.history[epoch].items() if k != "epoch"}


def _train(cells: list[CellRun], every: int) -> None:
    """Every cell's epochs in lockstep, with one Tune report per epoch and a checkpoint every
    ``every`` epochs, at most one per ``CHECKPOINT_SECONDS`` and none at the last epoch (the
    final result carries one): Tune snapshots the experiment whenever a trial has checkpointed
    ``num_to_keep`` times since the last snapshot, so short epochs checkpointed every time
    would snapshot it several times a second. Every cell keeps its ``last.pt`` each epoch.
    A trial that resumes from its cell folder under a new driver (after an interrupt) reports
    the epochs it had from the checkpoint's history first: the interrupted driver may not
    have recorded them all, and MLflow keeps each epoch once."""
    restored = _start(cells)
    saved = time.monotonic()
    runs = [cell.run for cell in cells]
    resumed_from = max(run.start_epoch for run in runs)
    epochs = max(run.epochs for run in runs)
    first = min(run.start_epoch for run in runs) if restored else 0
    for epoch in range(first, epochs):
        per_cell = {
            cell.category: _epoch_metrics(cell.run, epoch)
            for cell in cells
            if epoch < cell.run.epochs
        }
        metrics = combine(per_cell)
        if resumed_from:  # shows in MLflow that an interrupted trial did not start over
            metrics["resumed_from_epoch"] = resumed_from
        result = {"epoch": epoch, METRICS: metrics}
        last = epoch + 1 == epochs  # the final result that follows carries a checkpoint
        if (epoch + 1) % every or last or time.monotonic() - saved < CHECKPOINT_SECONDS:
            tune.report(result)
            continue
        with tempfile.TemporaryDirectory() as folder:
            tune.report(result, checkpoint=_checkpoint(cells, Path(folder)))
        saved = time.monotonic()


def _final_artifacts(cell: CellRun, folder: Path, keep_checkpoint: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(cell.out_dir / "metrics.json", folder / "metrics.json")
    for defect_dir in sorted((cell.out_dir / "heatmaps").glob("*")):
        for image in sorted(defect_dir.glob("*.png"))[:HEATMAPS_PER_DEFECT]:
            (folder / "heatmaps" / defect_dir.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, folder / "heatmaps" / defect_dir.name / image.name)
    if keep_checkpoint:
        best = checkpoint_path(cell.out_dir, cell.config, "best")
        shutil.copy2(best, folder / best.name)


def _test(cell: CellRun) -> tuple[dict[str, float], dict[str, str]]:
    """The selected checkpoint on the test split: test metrics, and the selected epoch's
    validation metrics (schedulers and searchers expect the objective in every result, and the
    record keeps what the selection was based on); and how the test measured them."""
    metrics = evaluate(cell.run.path("best"), out_dir=cell.out_dir, device=cell.config.train.device)
    final = {**metrics["selection_metrics"], **{key: metrics[key] for key in TEST_METRICS}}
    final.update({k: v for k, v in metrics.items() if k.startswith("gap_")})
    final["inference_seconds"] = metrics["inference_seconds"]
    return final, {key: str(metrics[key]) for key in TEST_PROTOCOL}


def run_cell(params: dict[str, Any], context: TrialContext) -> None:
    """Train and test one cell (or an HPO trial's cells). ``params["cell"]`` is an ablation
    cell's spec; an HPO trial's params are dotted overrides that ``context.plan`` turns into a
    spec with one cell per category. An error leaves the trial in a form Ray can ship to the
    driver, so MLflow records its real cause."""
    with travelling_errors():
        _run_cell(params, context)


def _run_cell(params: dict[str, Any], context: TrialContext) -> None:
    ensure_registered(context.methods)
    spec = (
        TrialSpec.from_dict(params["cell"]) if "cell" in params else context.plan.spec_for(params)
    )
    cells = [
        CellRun(
            one.key,
            one.category,
            Config.from_flat(one.config),
            cell_dir(context.cells_path, context.study, one.key),
        )
        for one in spec.members()
    ]
    _train(cells, context.checkpoint_every)
    tested = {cell.category: _test(cell) for cell in cells}
    final = combine({category: metrics for category, (metrics, _) in tested.items()})
    protocol = next(iter(tested.values()))[1]  # one config: every cell tests alike
    last_epoch = max(cell.run.history[-1]["epoch"] for cell in cells)
    with tempfile.TemporaryDirectory() as folder:
        for cell in cells:
            # One cell's artifacts at the top; several cells' in a folder per category.
            target = Path(folder) / (cell.category if len(cells) > 1 else "")
            _final_artifacts(cell, target, context.keep_checkpoint)
        tune.report(
            {"epoch": last_epoch, "final": True, METRICS: final, PROTOCOL: protocol},
            checkpoint=tune.Checkpoint.from_directory(folder),
        )
