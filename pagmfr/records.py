"""The MLflow record layout of a study, in one place: the tags that mark a run's role, the
filters that find runs by them, the declared grid's file, the lookups of the study run and of
each cell's latest run, and where records live by default. The study writes records
(``pagmfr.study.tracking``), the report and ``pagmfr study status`` read them: each names the
layout through this module. Light: MLflow loads only when a store is opened, so option parsing
(``--help``, ``--tracking-uri``) reads the default store without it."""

from __future__ import annotations

import json
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from pagmfr.logs import environment

#: The tag that says what a run is: the study's own run, or one cell's.
ROLE = "role"
STUDY_ROLE, CELL_ROLE = "study", "cell"
#: MLflow search filters of those runs.
STUDY_RUNS = f"tags.{ROLE} = '{STUDY_ROLE}'"
CELL_RUNS = f"tags.{ROLE} = '{CELL_ROLE}'"
#: Where a study's declared grid lives on its study run (an artifact: it outgrows a tag).
GRID_FILE = "grid.json"
#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: Tags that say which cell, config and code a run belongs to (see pagmfr.study.cells).
IDENTITY_TAGS = ("cell_key", "config_key", "code_version", "code_fingerprint")


def default_tracking_uri() -> str:
    """Where MLflow records are read and written when a command (a study, ``pagmfr report``)
    is given no ``--tracking-uri``: ``$MLFLOW_TRACKING_URI``, as MLflow itself reads it, else
    ``mlflow.db`` in the current folder."""
    return os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")


def check_reachable(tracking_uri: str) -> None:
    """Fail fast and clearly: MLflow's own client retries an unreachable server for minutes,
    silently creates an empty sqlite store at a mistyped path, and meets a file that is not a
    store with an SQL error or its file store's maintenance notice."""
    if tracking_uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=5)
        except OSError as err:
            raise ConnectionError(
                f"cannot reach the MLflow tracking server at {tracking_uri} ({err}); "
                "is `mlflow server` running there?"
            ) from err
    elif tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise FileNotFoundError(f"no MLflow store at {path} (from {tracking_uri})")
        with path.open("rb") as store:
            header = store.read(len(SQLITE_HEADER))
            if header and header != SQLITE_HEADER:  # an empty file is an empty database
                raise ValueError(
                    f"{path} (from {tracking_uri}) is not an SQLite database, so not an MLflow "
                    "store: give the .db file a study wrote (--tracking-uri sqlite:///PATH)"
                )
    elif "://" not in tracking_uri and Path(tracking_uri).is_file():
        raise ValueError(
            f"{tracking_uri} is a file, not an MLflow store: give a store as "
            "sqlite:///PATH.db or http://HOST:PORT (--tracking-uri or MLFLOW_TRACKING_URI)"
        )


def study_experiment(tracking_uri: str, study: str) -> tuple[Any, Any]:
    """An ``MlflowClient`` of ``tracking_uri`` and the study's experiment, or a clear error:
    the store is missing or unreachable (checked before a client would create an empty
    sqlite file), or the study is not there (naming those that are)."""
    from mlflow.tracking import MlflowClient

    check_reachable(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise ValueError(
            f"no study {study!r} in {tracking_uri}; studies there: {', '.join(names) or 'none'}"
        )
    return client, experiment


def study_run(client: Any, experiment_id: str) -> Any:
    """The study's own run (tag ``role=study``) in the experiment, or None."""
    parents = client.search_runs([experiment_id], STUDY_RUNS, max_results=1)
    return parents[0] if parents else None


def cell_run_filter(key: str) -> str:
    """The search filter of one cell's runs, by its key."""
    return f"{CELL_RUNS} and tags.cell_key = '{key}'"


def latest_cell_runs(client: Any, experiment_id: str) -> dict[str, Any]:
    """The latest run of every cell key recorded in the experiment."""
    runs = client.search_runs(
        [experiment_id], CELL_RUNS, max_results=50_000, order_by=["attributes.start_time ASC"]
    )
    return {run.data.tags.get("cell_key"): run for run in runs}


def declared_grid(client: Any, run: Any) -> dict[str, Any] | None:
    """The grid on the study run ``run`` (None: no run, or one recorded without a grid)."""
    if run is None or "grid" not in run.data.tags:
        return None
    with (
        tempfile.TemporaryDirectory() as folder,
        environment(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"),
    ):
        path = client.download_artifacts(run.info.run_id, GRID_FILE, folder)
        return json.loads(Path(path).read_text())
