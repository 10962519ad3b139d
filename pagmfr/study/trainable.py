"""The Ray Tune trainable: one study cell (or HPO trial) through :func:`pagmfr.engine.fit`.

It reports every epoch, with a checkpoint every ``checkpoint_every`` epochs (so a trial on a
lost node resumes from there on another), then evaluates the selected checkpoint on the test
split and reports the test metrics with the artifacts the driver records in MLflow. A result
is ``{"epoch": e, "metrics": {...}}``: the driver records ``metrics`` and nothing of Tune's.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from pagmfr.config import Config
from pagmfr.engine import TEST_METRICS, EpochReport, checkpoint_path, evaluate, fit
from pagmfr.errors import travelling_errors
from pagmfr.models.registry import MethodSpec, ensure_registered
from pagmfr.study.cells import SearchPlan, cell_dir

#: Heatmaps copied into the final artifacts (a few per defect type).
HEATMAPS_PER_DEFECT = 2
#: Where a result keeps the trainable's metrics (HPO's objective is "metrics/val_au_pro").
METRICS = "metrics"


@dataclass
class TrialContext:
    """What every trial of a study gets besides its cell; Tune ships it once to each worker."""

    study: str
    cells_path: str
    checkpoint_every: int = 1
    keep_checkpoint: bool = False
    #: HPO only: turns a trial's sampled overrides into a cell.
    plan: SearchPlan | None = None
    #: Methods registered outside pagmfr (in the study script): workers register them too.
    methods: list[MethodSpec] = field(default_factory=list)


class TuneReporter:
    """fit's per-epoch callback in a study: ``tune.report`` with, every ``every`` epochs and at
    the last, a checkpoint of the cell's ``last`` and ``best`` files."""

    def __init__(self, config: Config, out_dir: Path, every: int):
        self.config, self.out_dir, self.every = config, out_dir, every

    def __call__(self, report: EpochReport) -> None:
        metrics = dict(report.metrics)
        if report.resumed_from:  # shows in MLflow that an interrupted trial did not start over
            metrics["resumed_from_epoch"] = report.resumed_from
        result = {"epoch": report.epoch, METRICS: metrics}
        if (report.epoch + 1) % self.every and not report.is_last:
            tune.report(result)
            return
        with tempfile.TemporaryDirectory() as folder:
            for which in ("last", "best"):
                source = checkpoint_path(self.out_dir, self.config, which)
                if source.is_file():
                    shutil.copy2(source, Path(folder) / source.name)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))


def _final_artifacts(out_dir: Path, folder: Path, keep_checkpoint: bool, config: Config) -> None:
    shutil.copy2(out_dir / "metrics.json", folder / "metrics.json")
    for defect_dir in sorted((out_dir / "heatmaps").glob("*")):
        for image in sorted(defect_dir.glob("*.png"))[:HEATMAPS_PER_DEFECT]:
            (folder / "heatmaps" / defect_dir.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, folder / "heatmaps" / defect_dir.name / image.name)
    if keep_checkpoint:
        best = checkpoint_path(out_dir, config, "best")
        shutil.copy2(best, folder / best.name)


def _fit(config: Config, out_dir: Path, reporter: TuneReporter):
    """fit, resuming from Tune's checkpoint when the trial was restored (a lost node), else
    from the cell folder's own (a restarted driver), else from scratch."""
    restored = tune.get_checkpoint()
    if restored is None:
        return fit(config, out_dir, callbacks=(reporter,))
    with tempfile.TemporaryDirectory() as folder:
        restored.to_directory(folder)
        return fit(config, out_dir, callbacks=(reporter,), resume=folder)


def run_cell(params: dict[str, Any], context: TrialContext) -> None:
    """Train and test one cell. ``params["cell"]`` is an ablation cell's spec; an HPO trial's
    params are dotted overrides that ``context.plan`` turns into a spec. An error leaves the
    cell in a form Ray can ship to the driver, so MLflow records its real cause."""
    with travelling_errors():
        _run_cell(params, context)


def _run_cell(params: dict[str, Any], context: TrialContext) -> None:
    ensure_registered(context.methods)
    spec = params["cell"] if "cell" in params else context.plan.spec_for(params)
    config = Config.from_flat(spec["config"])
    out_dir = cell_dir(context.cells_path, context.study, spec["key"])
    reporter = TuneReporter(config, out_dir, context.checkpoint_every)
    result = _fit(config, out_dir, reporter)
    metrics = evaluate(result.best_checkpoint, out_dir=out_dir, device=config.train.device)
    # The selected epoch's validation metrics ride along: schedulers and searchers expect the
    # objective in every result, and the record keeps what the selection was based on.
    final = {**metrics["selection_metrics"], **{key: metrics[key] for key in TEST_METRICS}}
    final.update({k: v for k, v in metrics.items() if k.startswith("gap_")})
    final["inference_seconds"] = metrics["inference_seconds"]
    with tempfile.TemporaryDirectory() as folder:
        _final_artifacts(out_dir, Path(folder), context.keep_checkpoint, config)
        tune.report(
            {"epoch": result.history[-1]["epoch"], "final": True, METRICS: final},
            checkpoint=tune.Checkpoint.from_directory(folder),
        )
