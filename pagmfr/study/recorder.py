"""The driver-side Tune callback that records trials in MLflow, and survives MLflow outages.

Every write is an operation in an ordered queue: when the tracking server cannot be reached,
the failed operation and everything after it wait and are retried at the next event, and at
the end of the study until ``flush_timeout_s`` has passed. Nothing is dropped; the summary says
how long MLflow was unreachable and how many writes were delayed.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from pagmfr.logs import environment
from pagmfr.study.spec import TrialSpec
from pagmfr.study.tracking import StudyTracker
from pagmfr.study.trainable import METRICS, PROTOCOL

#: MLflow's client retries an unreachable server for minutes and waits 120 s for an answer;
#: the recorder's writes fail fast instead (its queue does the waiting, without stalling Tune).
#: Only its writes: the study's report reads every run in one request, which takes longer than
#: 10 s on a study of thousands of cells.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    """The trainable's finite metrics; the rest of a result is Tune's bookkeeping."""
    return {
        key: float(value)
        for key, value in result.get(METRICS, {}).items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    }


def trial_error(trial) -> str:
    """The error a failed trial left (its traceback), or a note that it left none."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text()
    return "trial failed (no error file)"


class MLflowRecorder(Callback):
    """Per epoch: metrics at step = epoch (wall time and peak memory included). At the end:
    test metrics (and the selected epoch's ``best_val_*``), artifacts from the final
    checkpoint, FINISHED; or FAILED with the error; ``recovered`` counts node-failure retries."""

    def __init__(
        self,
        tracker: StudyTracker,
        spec_of: Callable[[dict[str, Any]], TrialSpec],
        total: int,
        flush_timeout_s: float = 900.0,
    ):
        """``total``: the trials the study asks Tune for (Tune creates them lazily, so after an
        interrupt its own list may lack those it never got to)."""
        #: The fail-fast settings of this recorder's writes (a user's own settings win).
        self.fail_fast = {name: os.environ.get(name, value) for name, value in FAIL_FAST.items()}
        self.tracker = tracker
        self.spec_of = spec_of
        self.total = total
        self.flush_timeout_s = flush_timeout_s
        self.run_ids: dict[str, str] = {}
        self.recoveries: dict[str, int] = {}
        self.tested: set[str] = set()
        self.failed: list[str] = []
        self.finished: list[str] = []
        #: Trials stopped mid-training by an interrupt (their runs marked KILLED), and the
        #: number of trials that never started.
        self.interrupted: list[str] = []
        self.not_started = 0
        self.ended: set[str] = set()  # trial ids that completed or failed
        self.pending: deque[Callable[[], None]] = deque()
        self.delayed_writes = 0
        self.unreachable_since: float | None = None
        self.unreachable_seconds = 0.0
        self.last_error = ""

    # ---- the write queue ----

    def _write(self, operation: Callable[[], None]) -> None:
        self.pending.append(operation)
        self._flush()

    def _flush(self) -> bool:
        recovering = self.unreachable_since is not None
        while self.pending:
            try:
                with environment(**self.fail_fast):
                    self.pending[0]()
            except Exception as err:  # MLflow down: keep this and later writes, in order
                if self.unreachable_since is None:
                    self.unreachable_since = time.time()
                self.last_error = f"{type(err).__name__}: {err}"[:300]
                return False
            self.pending.popleft()
            self.delayed_writes += recovering  # it waited for MLflow to come back
        if recovering:
            self.unreachable_seconds += time.time() - self.unreachable_since
            self.unreachable_since = None
        return True

    def flush(self) -> bool:
        """Retry the delayed writes until they all went through or the timeout passed."""
        deadline, pause = time.time() + self.flush_timeout_s, 1.0
        while not self._flush():
            if time.time() > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 30.0)
        return True

    def outage_report(self) -> str:
        """A line on how long MLflow was unreachable and what waited, or nothing."""
        if not self.delayed_writes and not self.pending:
            return ""
        state = "all delivered" if not self.pending else f"{len(self.pending)} NOT delivered"
        return (
            f"MLflow was unreachable for {self.unreachable_seconds:.0f} s ({self.last_error}); "
            f"{self.delayed_writes} write(s) delayed, {state}"
        )

    # ---- Tune events ----

    def _run(self, trial) -> str:
        if trial.trial_id not in self.run_ids:
            self.run_ids[trial.trial_id] = self.tracker.open_cell(self.spec_of(trial.config))
        return self.run_ids[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        """Open (or reopen) the cell's run."""
        self._write(lambda: self._run(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Record an epoch's metrics (or the final test metrics) at step = epoch."""
        metrics, tags = _numbers(result), {}
        if result.get("final"):
            self.tested.add(trial.trial_id)
            metrics = {
                ("best_" + k if k.startswith(("val_", "test_")) else k): v
                for k, v in metrics.items()
            }
            tags = {f"test.{k}": v for k, v in result.get(PROTOCOL, {}).items()}
        step = int(result.get("epoch", iteration))
        self._write(lambda: self.tracker.log_metrics(self._run(trial), metrics, step, tags))

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Count a node-failure retry on the run."""
        count = self.recoveries[trial.trial_id] = self.recoveries.get(trial.trial_id, 0) + 1
        self._write(lambda: self.tracker.client.set_tag(self._run(trial), "recovered", str(count)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Store the final artifacts and mark the run FINISHED."""
        tested, checkpoint = trial.trial_id in self.tested, trial.checkpoint

        def complete() -> None:
            run_id = self._run(trial)
            if not tested:  # stopped early by the scheduler (ASHA): no test
                self.tracker.client.set_tag(run_id, "early_stopped", "true")
            elif checkpoint is not None:
                with checkpoint.as_directory() as folder:
                    self.tracker.log_artifacts(run_id, folder)
            self.tracker.finish(run_id)

        self._write(complete)
        self.finished.append(self.spec_of(trial.config).key)
        self.ended.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Mark the run FAILED with the trial's error."""
        error = trial_error(trial)
        self._write(lambda: self.tracker.fail(self._run(trial), error))
        self.failed.append(self.spec_of(trial.config).key)
        self.ended.add(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        """Mark the runs of trials an interrupt stopped KILLED (so they read as interrupted,
        not running; the next run of the study reopens and resumes them), count those that
        never started, and deliver every delayed write before the study returns."""
        for trial in trials:  # an interrupt stops trials as TERMINATED, without completing
            if trial.trial_id in self.ended or trial.trial_id not in self.run_ids:
                continue
            self.interrupted.append(self.spec_of(trial.config).key)
            self._write(lambda trial=trial: self.tracker.kill(self._run(trial)))
        self.not_started = max(0, self.total - len(self.ended) - len(self.interrupted))
        self.flush()
