"""A study's runs as one tidy DataFrame: from MLflow, or from stand-alone training folders."""

from __future__ import annotations

import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from pagmfr.categories import category_kind
from pagmfr.config import selection_of
from pagmfr.logs import environment

COLUMNS = [
    "run_id",
    "variant",
    "method",
    "category",
    "kind",
    "seed",
    "status",
    "end_time",
    "error",
    "selection",
]
#: Where a study's declared grid lives on its study run (an artifact: it outgrows a tag).
GRID_FILE = "grid.json"
#: Tags that say which cell, config and code a run belongs to (see pagmfr.study.cells).
IDENTITY_TAGS = ("cell_key", "config_key", "code_version", "code_fingerprint")
#: The resolution of a study cell's test metrics where its run has no ``test.resolution`` tag
#: (recorded before it was): the trainable has always tested at the model's resolution. A
#: stand-alone run's metrics.json records its own ("full", "256px").
STUDY_RESOLUTION = "model"
#: The column of AU-PRO's FPR limit, as each test recorded it.
FPR_LIMIT = "au_pro_fpr_limit"


def check_reachable(tracking_uri: str) -> None:
    """Fail fast and clearly: MLflow's own client retries an unreachable server for minutes,
    and silently creates an empty sqlite store at a mistyped path."""
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


def runs_from_mlflow(tracking_uri: str, study: str) -> pd.DataFrame:
    """Every cell run of ``study`` (any status), with tags, params and metrics as columns."""
    import mlflow

    _, experiment = study_experiment(tracking_uri, study)
    mlflow.set_tracking_uri(tracking_uri)
    raw = mlflow.search_runs(
        [experiment.experiment_id], filter_string="tags.role = 'cell'", max_results=100_000
    )
    if raw.empty:
        raise ValueError(f"study {study!r} has no cell runs yet")
    runs = pd.DataFrame(
        {
            "run_id": raw["run_id"],
            "variant": raw["tags.variant"],
            "method": raw["tags.method"],
            "category": raw["tags.category"],
            "kind": raw.get("tags.kind", pd.Series(index=raw.index, dtype=object)),
            "seed": raw["tags.seed"].astype(int),
            "status": raw["status"],
            "end_time": raw["end_time"],
            "error": raw.get("tags.error", pd.Series(index=raw.index, dtype=object)),
        }
    )
    runs["kind"] = [
        k if isinstance(k, str) and k else category_kind(c)
        for k, c in zip(runs["kind"], runs["category"], strict=True)
    ]
    runs["selection"] = _protocols(raw)
    recorded = raw.get("tags.test.resolution", pd.Series(index=raw.index, dtype=object))
    runs["resolution"] = recorded.fillna(STUDY_RESOLUTION)
    runs[FPR_LIMIT] = raw.get(
        "tags.test.au_pro_fpr_limit", pd.Series(index=raw.index, dtype=object)
    )
    for tag in IDENTITY_TAGS:
        runs[tag] = raw.get(f"tags.{tag}", pd.Series(index=raw.index, dtype=object))
    metrics = raw[[c for c in raw.columns if c.startswith("metrics.")]].rename(
        columns=lambda c: c[len("metrics.") :]
    )
    extra = raw[[c for c in raw.columns if c.startswith(("params.", "tags."))]]
    return pd.concat([runs, metrics, extra], axis=1)


def _protocols(raw: pd.DataFrame) -> list[str]:
    """Each run's selection protocol in words, from its params (a config of any version)."""
    keys = [c for c in raw.columns if c.startswith("params.validation.")]
    return [
        selection_of({k.removeprefix("params."): v for k, v in row.items() if isinstance(v, str)})
        for row in raw[keys].to_dict("records")
    ]


def grid_from_mlflow(tracking_uri: str, study: str) -> dict[str, Any] | None:
    """The grid a study last declared (``grid.json`` on its study run), or None for a study
    recorded without one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    return declared_grid(client, study_run(client, experiment))


def study_run(client: Any, experiment: Any) -> Any:
    """The study's own run (tag ``role=study``) in ``experiment``, or None."""
    parents = client.search_runs([experiment.experiment_id], "tags.role = 'study'", max_results=1)
    return parents[0] if parents else None


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


#: A metrics record's key for the category its checkpoint was trained on, when it was tested on
#: another (``pagmfr evaluate --category``); absent or null otherwise.
TRANSFER = "transfer_from"
#: What a stand-alone run's metrics.json must hold for a report row.
RECORD_KEYS = ("config", "seed")
CONFIG_KEYS = ("method", "data.category")
REWRITE = (
    "rewrite it with `pagmfr evaluate --checkpoint <folder>/checkpoints/<best>.pt --out <folder>`"
)


def _read_metrics(path: Path) -> dict:
    """A ``pagmfr train`` folder's metrics.json, or an error naming it and what to do."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path.parent}: no metrics.json (is it a `pagmfr train --out` folder?)"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable or truncated ({err}); {REWRITE}") from err
    config = record.get("config") if isinstance(record, dict) else None
    missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or k not in record]
    missing += [f"config {k}" for k in CONFIG_KEYS if isinstance(config, dict) and k not in config]
    if missing or not isinstance(config, dict):
        what = ", ".join(missing) or "a config object"
        raise ValueError(f"{path}: not a pagmfr metrics record (no {what}); {REWRITE}")
    return record


def runs_from_folders(folders: list[str | Path]) -> pd.DataFrame:
    """Stand-alone ``pagmfr train`` or ``pagmfr evaluate`` folders (their metrics.json): one row
    each; ``transfer_from`` names the training category of a checkpoint tested on another."""
    rows = []
    for folder in folders:
        path = Path(folder) / "metrics.json"
        record = _read_metrics(path)
        config = record["config"]
        root = Path(str(config.get("data.root", "")))
        kind = config.get("data.kind") or category_kind(
            config["data.category"], root=root if root.is_dir() else None
        )
        row = {
            "run_id": str(folder),
            "variant": config["method"],
            "method": config["method"],
            "category": config["data.category"],
            "kind": kind,
            "seed": int(record["seed"]),
            "status": "FINISHED",
            "end_time": path.stat().st_mtime,
            "error": None,
            "selection": record.get("selection_protocol") or selection_of(config),
            "resolution": record.get("resolution"),
            # Text, as a study run's tag holds it: a setting, not a metric to report.
            FPR_LIMIT: str(record.get(FPR_LIMIT, "")),
            TRANSFER: record.get(TRANSFER),
            "code_version": record.get("code_version"),
            # As a study cell's run holds them: the protocol line reads both alike.
            "tags.code_version": record.get("code_version"),
            "tags.data_fingerprint": record.get("data_fingerprint"),
            **{f"params.{key}": str(value) for key, value in config.items()},
        }
        row.update(
            {
                k: v
                for k, v in record.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != FPR_LIMIT
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)
