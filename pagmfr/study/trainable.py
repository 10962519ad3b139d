"""The Ray Tune trainable: one study cell (or HPO trial) through :func:`pagmfr.engine.fit`.

It reports every epoch with a checkpoint (so a trial on a lost node resumes from its last
epoch elsewhere), then evaluates the selected checkpoint on the test split and reports the
test metrics with the artifacts the driver records in MLflow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from pagmfr.config import Config
from pagmfr.engine import (
    TEST_METRICS,
    EpochReport,
    checkpoint_path,
    evaluate,
    fit,
    load_checkpoint,
)
from pagmfr.study.cells import cell_dir

#: Heatmaps copied into the final artifacts (a few per defect type).
HEATMAPS_PER_DEFECT = 2


class TuneReporter:
    """fit's per-epoch callback in a study: ``tune.report`` with a checkpoint of ``last.pt``
    (and ``best.pt``) every ``every`` epochs."""

    def __init__(self, config: Config, out_dir: Path, every: int, resumed_from: int):
        self.config, self.out_dir, self.every = config, out_dir, every
        self.resumed_from = resumed_from

    def __call__(self, report: EpochReport) -> None:
        metrics = {"epoch": report.epoch, **report.metrics}
        if self.resumed_from:  # shows in MLflow that an interrupted trial did not start over
            metrics["resumed_from_epoch"] = self.resumed_from
        last_epoch = report.epoch + 1 == self.config.train.epochs
        if (report.epoch + 1) % self.every and not last_epoch:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            for which in ("last", "best"):
                source = checkpoint_path(self.out_dir, self.config, which)
                if source.is_file():
                    shutil.copy2(source, Path(folder) / source.name)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _restore(out_dir: Path, config: Config) -> int:
    """Bring Tune's latest checkpoint (another node's, after a failure) into the cell folder,
    where fit resumes from it. Returns the epoch training resumes at (0: from scratch)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        target = out_dir / "checkpoints"
        target.mkdir(parents=True, exist_ok=True)
        with checkpoint.as_directory() as folder:
            for path in Path(folder).glob("*.pt"):  # copy, then rename: never half a file
                shutil.copy2(path, target / (path.name + ".partial"))
                os.replace(target / (path.name + ".partial"), target / path.name)
    last = checkpoint_path(out_dir, config, "last")
    return load_checkpoint(last)["epoch"] + 1 if last.is_file() else 0


def _final_artifacts(out_dir: Path, folder: Path, keep_checkpoint: bool, config: Config) -> None:
    shutil.copy2(out_dir / "metrics.json", folder / "metrics.json")
    for defect_dir in sorted((out_dir / "heatmaps").glob("*")):
        for image in sorted(defect_dir.glob("*.png"))[:HEATMAPS_PER_DEFECT]:
            (folder / "heatmaps" / defect_dir.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, folder / "heatmaps" / defect_dir.name / image.name)
    if keep_checkpoint:
        best = checkpoint_path(out_dir, config, "best")
        shutil.copy2(best, folder / best.name)


def run_cell(params: dict[str, Any], study: dict[str, Any]) -> None:
    """Train and test one cell. ``params["cell"]`` is an ablation cell's spec; an HPO trial's
    params are dotted overrides that ``study["plan"]`` turns into a spec."""
    spec = params["cell"] if "cell" in params else study["plan"].spec_for(params)
    config = Config.from_flat(spec["config"])
    out_dir = cell_dir(study["cells_path"], study["name"], spec["key"])
    resumed_from = _restore(out_dir, config)
    reporter = TuneReporter(config, out_dir, study["checkpoint_every"], resumed_from)
    result = fit(config, out_dir, callbacks=(reporter,))
    metrics = evaluate(result.best_checkpoint, out_dir=out_dir, device=config.train.device)
    # The selected epoch's validation metrics ride along: schedulers and searchers expect the
    # objective in every result, and the record keeps what the selection was based on.
    final = {**metrics["selection_metrics"], **{key: metrics[key] for key in TEST_METRICS}}
    final.update(
        epoch=config.train.epochs - 1, final=1, inference_seconds=metrics["inference_seconds"]
    )
    with tempfile.TemporaryDirectory() as folder:
        _final_artifacts(out_dir, Path(folder), study["keep_checkpoint"], config)
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(folder))
