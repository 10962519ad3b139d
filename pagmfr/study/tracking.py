"""MLflow records of a study: one experiment per study, holding one run per cell and a study run.

Only the driver writes (through :class:`~pagmfr.study.recorder.MLflowRecorder`): one writer
keeps a sqlite store free of "database is locked", and works unchanged against an
``mlflow server``. A cell's run is found again by its ``cell_key`` tag, so retries, resumed
trials and re-runs of the study reuse it: exactly one finished run per cell.

The experiment is set up for browsing: it is marked as model development (not GenAI), cell
runs are top-level runs named ``variant / category / seed N`` (MLflow's UI folds child runs
under a collapsed parent), and a saved view (:data:`CELL_VIEW`) lists the cells with their
variant, overrides and test metrics as columns; :meth:`StudyTracker.ui_link` opens it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pagmfr.config import selection_of
from pagmfr.provenance import code_version
from pagmfr.records import (
    CELL_ROLE,
    CELL_RUNS,
    GRID_FILE,
    ROLE,
    STUDY_ROLE,
    cell_run_filter,
    check_reachable,
    latest_cell_runs,
    study_run,
)
from pagmfr.study.spec import TrialSpec

_BATCH = 100  # MLflow's log_batch limit is 1000 metrics, 100 params
#: MLflow's convention for "this experiment trains models" (its UI otherwise may open GenAI).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: The saved view of the cells: ``?viewStateShareKey=pagmfr-cells`` in the UI's address.
CELL_VIEW = "pagmfr-cells"


def artifact_location(tracking_uri: str) -> str | None:
    """Beside a sqlite store (MLflow's default, ./mlruns, depends on the working directory);
    a tracking server chooses its own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "mlartifacts").as_uri()


def check_tracking_server(tracking_uri: str) -> None:
    """Fail in seconds, naming the address, when a tracking server does not answer: MLflow's
    client would retry it for minutes before a raw error. (A sqlite store is created by the
    study when missing.)"""
    if tracking_uri.startswith(("http://", "https://")):
        check_reachable(tracking_uri)


def cell_view(metrics: Iterable[str]) -> str:
    """MLflow's saved-view state (the UI's own JSON) for the cells: only cell runs, in the
    order they started, with their variant, overrides, category, seed and ``metrics`` shown."""
    columns = [f"tags.`{tag}`" for tag in ("variant", "overrides", "category", "seed")]
    return json.dumps(
        {
            "searchFilter": CELL_RUNS,
            "orderByKey": "attributes.start_time",
            "orderByAsc": True,
            "selectedColumns": columns + [f"metrics.`{m}`" for m in metrics],
        }
    )


class StudyTracker:
    """A study's MLflow experiment, its study run, and its cells' runs (driver only)."""

    def __init__(self, tracking_uri: str, study: str, view_metrics: Iterable[str] = ()):
        # MLflow's client prints a run's address (after a request of its own) each time a run
        # ends on a tracking server: two lines and a request per cell; the study prints its
        # own link once (ui_link).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.tracking_uri = tracking_uri
        self.study = study
        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(study)
        if experiment is None:
            location = artifact_location(tracking_uri)
            self.experiment_id = self.client.create_experiment(study, artifact_location=location)
        else:
            self.experiment_id = experiment.experiment_id
        tags = {**EXPERIMENT_KIND, f"mlflow.sharedViewState.{CELL_VIEW}": cell_view(view_metrics)}
        for key, value in tags.items():
            self.client.set_experiment_tag(self.experiment_id, key, value)
        parent = study_run(self.client, self.experiment_id)
        if parent is not None:
            self.parent_id = parent.info.run_id
        else:
            tags = {ROLE: STUDY_ROLE, "study": study, "code_version": code_version()}
            self.parent_id = self.client.create_run(
                self.experiment_id, tags=tags, run_name=f"{study} (study)"
            ).info.run_id
        #: The last step recorded per run and metric: a resumed trial re-reports the epochs
        #: since its last checkpoint, and MLflow would keep both copies.
        self.recorded_steps: dict[str, dict[str, int]] = {}
        #: Every cell key with a run, once :meth:`cell_runs` has read them (None before): a
        #: cell that has none needs no search when its trial starts.
        self.recorded_keys: set[str] | None = None

    def ui_link(self, ui: str = "http://127.0.0.1:5000") -> str:
        """The MLflow UI's address of the cells' saved view (``ui``: where the UI runs; for a
        tracking server, the server itself)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            ui = self.tracking_uri
        return (
            f"{ui.rstrip('/')}/#/experiments/{self.experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={CELL_VIEW}"
        )

    def cell_runs(self) -> dict[str, Any]:
        """The latest run of every cell key recorded so far."""
        latest = latest_cell_runs(self.client, self.experiment_id)
        self.recorded_keys = set(latest)
        return latest

    def open_cell(self, spec: TrialSpec) -> str:
        """The cell's run, reopened when it exists unfinished (a retry, or a study resumed after
        an interrupt), else created with its tags and the full flattened config as params. A
        finished run is never reopened: a trial of a finished cell (an HPO trial that samples
        a config already tried) gets a run of its own."""
        existing = self._latest_run(spec.key)
        if existing is not None and existing.info.status != "FINISHED":
            run_id = existing.info.run_id
            attempts = int(existing.data.tags.get("attempts", "1")) + 1
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "attempts", str(attempts))
            self.recorded_steps[run_id] = self._last_steps(run_id, existing.data.metrics)
            return run_id
        tags = {
            ROLE: CELL_ROLE,
            "study": self.study,
            "method": spec.method,
            "variant": spec.variant,
            "overrides": spec.overrides,
            "category": spec.category,
            "kind": spec.kind,
            "seed": str(spec.seed),
            "selection": selection_of(spec.config),
            "cell_key": spec.key,
            "config_key": spec.config_key,
            "data_fingerprint": spec.fingerprint,
            "code_version": code_version(),
            "code_fingerprint": spec.code,
            "attempts": "1",
            "study_run_id": self.parent_id,
        }
        run_id = self.client.create_run(
            self.experiment_id, tags=tags, run_name=spec.name
        ).info.run_id
        params = [Param(k, str(v)) for k, v in sorted(spec.config.items())]
        for start in range(0, len(params), _BATCH):
            self.client.log_batch(run_id, params=params[start : start + _BATCH])
        self.recorded_steps[run_id] = {}
        if self.recorded_keys is not None:
            self.recorded_keys.add(spec.key)
        return run_id

    def _latest_run(self, key: str) -> Any:
        """The cell's latest run, or None. Searched for (one cell's runs: searching the whole
        study at every trial start would make a study quadratic in its number of cells) unless
        :meth:`cell_runs` found the key has none: a fresh study's cells need no search."""
        if self.recorded_keys is not None and key not in self.recorded_keys:
            return None
        same_key = self.client.search_runs(
            [self.experiment_id],
            cell_run_filter(key),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return same_key[0] if same_key else None

    def _last_steps(self, run_id: str, metrics: Iterable[str]) -> dict[str, int]:
        return {
            key: max(m.step for m in self.client.get_metric_history(run_id, key)) for key in metrics
        }

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], step: int, tags: dict[str, str] | None = None
    ) -> None:
        """Metrics at ``step`` in batches of MLflow's limit, less those already recorded at
        this step or a later one (epochs a restored trial reports again), and ``tags`` with the
        first batch."""
        recorded = self.recorded_steps.setdefault(run_id, {})
        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step) for k, v in metrics.items() if step > recorded.get(k, -1)
        ]
        tagged = [RunTag(k, v) for k, v in (tags or {}).items()]
        for start in range(0, max(len(batch), len(tagged)), 1000):
            self.client.log_batch(
                run_id, metrics=batch[start : start + 1000], tags=tagged if not start else []
            )
        recorded.update({metric.key: step for metric in batch})

    def log_artifacts(self, run_id: str, folder: str | Path, path: str | None = None) -> None:
        """A folder's files as the run's artifacts (under ``path``)."""
        self.client.log_artifacts(run_id, str(folder), path)

    def finish(self, run_id: str) -> None:
        """Mark the run FINISHED."""
        self.client.set_terminated(run_id, "FINISHED")

    def kill(self, run_id: str) -> None:
        """Mark the run KILLED: an interrupt stopped it; a later run of the study resumes it."""
        self.client.set_terminated(run_id, "KILLED")

    def fail(self, run_id: str, error: str) -> None:
        """Mark the run FAILED with the end of its error as the ``error`` tag."""
        self.client.log_batch(run_id, tags=[RunTag("error", error[-4000:])])
        self.client.set_terminated(run_id, "FAILED")

    # ---- the study run ----

    def declare_grid(self, grid: dict[str, Any]) -> int:
        """Record the grid this run of the study declared (variants in order, categories,
        seeds, each cell's key) on the study run; the report reads it to know every cell
        that should exist. Returns how many times the study has been run."""
        runs = int(self.client.get_run(self.parent_id).data.tags.get("study_runs", "0")) + 1
        self.client.update_run(self.parent_id, status="RUNNING")
        self.client.log_text(self.parent_id, json.dumps(grid, indent=1), GRID_FILE)
        summary = (
            f"{len(grid['variants'])} variants x {len(grid['categories'])} categories x "
            f"{len(grid['seeds'])} seeds"
        )
        tags = {"study_runs": str(runs), "grid": summary, "code_version": code_version()}
        self.client.log_batch(self.parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return runs

    def close_study(self, summary: dict[str, Any]) -> None:
        """Summary tags on the study run; KILLED when interrupted, FAILED when a cell failed."""
        self.client.log_batch(self.parent_id, tags=[RunTag(k, str(v)) for k, v in summary.items()])
        status = "FAILED" if summary.get("failed") else "FINISHED"
        self.client.set_terminated(
            self.parent_id, "KILLED" if summary.get("interrupted") else status
        )
