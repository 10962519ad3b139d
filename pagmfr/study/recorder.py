"""The driver-side Tune callback that records trials in MLflow."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from pagmfr.study.tracking import StudyTracker

# Tune's own bookkeeping, not the model's metrics.
_TUNE_KEYS = {
    "final",
    "epoch",
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "time_since_restore",
    "iterations_since_restore",
    "done",
    "pid",
    "node_ip",
    "trial_id",
    "experiment_tag",
    "date",
    "hostname",
    "checkpoint_dir_name",
    "should_checkpoint",
    "config",
}


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in result.items()
        if key not in _TUNE_KEYS
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    }


def _error_text(trial) -> str:
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text()
    return "trial failed (no error file)"


class MLflowRecorder(Callback):
    """Per epoch: metrics at step = epoch (wall time and peak memory included). At the end:
    test metrics, artifacts from the final checkpoint, FINISHED; or FAILED with the error."""

    def __init__(self, tracker: StudyTracker, spec_of: Callable[[dict[str, Any]], dict[str, Any]]):
        self.tracker = tracker
        self.spec_of = spec_of
        self.run_ids: dict[str, str] = {}
        self.tested: set[str] = set()
        self.failed: list[str] = []
        self.finished: list[str] = []

    def _run(self, trial) -> str:
        if trial.trial_id not in self.run_ids:
            self.run_ids[trial.trial_id] = self.tracker.open_cell(self.spec_of(trial.config))
        return self.run_ids[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run(trial)
        metrics = _numbers(result)
        if result.get("final"):
            self.tested.add(trial.trial_id)
            metrics = {
                ("best_" + k if k.startswith(("val_", "test_")) else k): v
                for k, v in metrics.items()
            }
        self.tracker.log_metrics(run_id, metrics, step=int(result.get("epoch", iteration)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        checkpoint = trial.checkpoint
        if trial.trial_id not in self.tested:  # stopped early by the scheduler (ASHA): no test
            self.tracker.client.set_tag(run_id, "early_stopped", "true")
        elif checkpoint is not None:
            with checkpoint.as_directory() as folder:
                self.tracker.log_artifacts(run_id, folder)
        self.tracker.finish(run_id)
        self.finished.append(self.spec_of(trial.config)["key"])

    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracker.fail(self._run(trial), _error_text(trial))
        self.failed.append(self.spec_of(trial.config)["key"])
