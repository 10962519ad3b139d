"""A study's runs as one tidy DataFrame: from MLflow, or from stand-alone training folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pagmfr.categories import category_kind
from pagmfr.config import selection_of
from pagmfr.records import (
    CELL_RUNS,
    IDENTITY_TAGS,
    declared_grid,
    study_experiment,
    study_run,
)

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
#: The resolution of a study cell's test metrics where its run has no ``test.resolution`` tag
#: (recorded before it was): the trainable has always tested at the model's resolution. A
#: stand-alone run's metrics.json records its own ("full", "256px").
STUDY_RESOLUTION = "model"
#: The column of AU-PRO's FPR limit, as each test recorded it.
FPR_LIMIT = "au_pro_fpr_limit"


def runs_from_mlflow(tracking_uri: str, study: str) -> pd.DataFrame:
    """Every cell run of ``study`` (any status), with tags, params and metrics as columns."""
    import mlflow

    _, experiment = study_experiment(tracking_uri, study)
    mlflow.set_tracking_uri(tracking_uri)
    raw = mlflow.search_runs(
        [experiment.experiment_id], filter_string=CELL_RUNS, max_results=100_000
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
    return declared_grid(client, study_run(client, experiment.experiment_id))


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
