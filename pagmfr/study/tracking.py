"""MLflow records of a study: one experiment and parent run per study, one child run per cell.

Only the driver writes (through :class:`~pagmfr.study.recorder.MLflowRecorder`): one writer
keeps a sqlite store free of "database is locked", and works unchanged against an
``mlflow server``. A cell's run is found again by its ``cell_key`` tag, so retries, resumed
trials and re-runs of the study reuse it: exactly one finished run per cell.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pagmfr.provenance import code_version
from pagmfr.study.cells import cell_name

CELL_TAGS = ("study", "method", "variant", "category", "seed", "cell_key")
_BATCH = 100  # MLflow's log_batch limit is 1000 metrics, 100 params


def artifact_location(tracking_uri: str) -> str | None:
    """Beside a sqlite store (MLflow's default, ./mlruns, depends on the working directory);
    a tracking server chooses its own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "mlartifacts").as_uri()


class StudyTracker:
    """A study's MLflow experiment and parent run, and its cells' child runs (driver only)."""

    def __init__(self, tracking_uri: str, study: str):
        self.tracking_uri = tracking_uri
        self.study = study
        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(study)
        if experiment is None:
            location = artifact_location(tracking_uri)
            self.experiment_id = self.client.create_experiment(study, artifact_location=location)
        else:
            self.experiment_id = experiment.experiment_id
        parents = self.client.search_runs(
            [self.experiment_id], "tags.role = 'study'", max_results=1
        )
        if parents:
            self.parent_id = parents[0].info.run_id
        else:
            tags = {"role": "study", "study": study, "code_version": code_version()}
            self.parent_id = self.client.create_run(
                self.experiment_id, tags=tags, run_name=study
            ).info.run_id

    def cell_runs(self) -> dict[str, Any]:
        """The latest child run of every cell key recorded so far."""
        runs = self.client.search_runs(
            [self.experiment_id],
            "tags.role = 'cell'",
            max_results=50_000,
            order_by=["attributes.start_time ASC"],
        )
        return {run.data.tags["cell_key"]: run for run in runs}

    def finished_keys(self) -> set[str]:
        """Cell keys with a finished run: a re-run skips them."""
        return {key for key, run in self.cell_runs().items() if run.info.status == "FINISHED"}

    def open_cell(self, spec: dict[str, Any]) -> str:
        """The cell's run, reopened when it exists (a retry or a resumed study), else created
        with its tags and the full flattened config as params."""
        # One cell's runs only: searching the whole study at every trial start would make a
        # study quadratic in its number of cells.
        same_key = self.client.search_runs(
            [self.experiment_id],
            f"tags.role = 'cell' and tags.cell_key = '{spec['key']}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        existing = same_key[0] if same_key else None
        if existing is not None:
            run_id = existing.info.run_id
            attempts = int(existing.data.tags.get("attempts", "1")) + 1
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "attempts", str(attempts))
            return run_id
        tags = {
            "role": "cell",
            "study": self.study,
            "method": spec["method"],
            "variant": spec["variant"],
            "category": spec["category"],
            "kind": spec["kind"],
            "seed": str(spec["seed"]),
            "cell_key": spec["key"],
            "data_fingerprint": spec["fingerprint"],
            "code_version": code_version(),
            "attempts": "1",
            "mlflow.parentRunId": self.parent_id,
        }
        name = cell_name(spec["variant"], spec["category"], spec["seed"])
        run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
        params = [Param(k, str(v)) for k, v in sorted(spec["config"].items())]
        for start in range(0, len(params), _BATCH):
            self.client.log_batch(run_id, params=params[start : start + _BATCH])
        return run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Metrics at ``step`` in batches of MLflow's limit."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])

    def log_artifacts(self, run_id: str, folder: str | Path) -> None:
        """A folder's files as the run's artifacts."""
        self.client.log_artifacts(run_id, str(folder))

    def finish(self, run_id: str) -> None:
        """Mark the run FINISHED."""
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, run_id: str, error: str) -> None:
        """Mark the run FAILED with the end of its error as the ``error`` tag."""
        self.client.log_batch(run_id, tags=[RunTag("error", error[-4000:])])
        self.client.set_terminated(run_id, "FAILED")

    def close_study(self, summary: dict[str, Any]) -> None:
        """Summary tags on the parent run; FAILED when a cell failed."""
        self.client.log_batch(self.parent_id, tags=[RunTag(k, str(v)) for k, v in summary.items()])
        self.client.set_terminated(
            self.parent_id, "FINISHED" if not summary.get("failed") else "FAILED"
        )
