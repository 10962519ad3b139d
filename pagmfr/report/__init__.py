"""Paper-ready ablation tables from a study's MLflow runs (or stand-alone training folders)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pagmfr.report import render
from pagmfr.report.load import keep_latest_finished, runs_from_folders, runs_from_mlflow
from pagmfr.report.tables import MetricTable, Missing, build_table, missing_cells

FORMATS = ("latex", "md", "csv", "html")
DEFAULT_METRICS = ("image_auroc", "pixel_auroc", "au_pro")


@dataclass
class Report:
    """What a report wrote: its tables, the missing cells, the dropped duplicates and the files."""

    tables: list[MetricTable]
    missing: list[Missing]
    duplicates_dropped: int
    files: list[Path]


def build_report(
    runs: pd.DataFrame,
    out_dir: str | Path,
    title: str,
    metrics=DEFAULT_METRICS,
    reference: str | None = None,
    formats=FORMATS,
    decimals: int = 1,
    percent: bool = True,
) -> Report:
    """Tables for every metric written in every format under ``out_dir``."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown formats {unknown}; allowed: {', '.join(FORMATS)}")
    kept, dropped = keep_latest_finished(runs)
    if kept.empty:
        raise ValueError(f"{title}: no finished run yet")
    tables = [
        build_table(m, runs, kept, reference, 100.0 if percent else 1.0, decimals) for m in metrics
    ]
    missing = missing_cells(runs, kept)
    notes = [
        f"{len(kept)} finished runs used, "
        f"{dropped} duplicate finished run(s) dropped (latest kept), "
        f"{len(missing)} cell(s) missing."
    ]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if "latex" in formats:
        for table in tables:
            files.append(out / f"{table.metric}.tex")
            files[-1].write_text(render.latex(table))
    if "md" in formats:
        files.append(out / "report.md")
        body = [f"# {title}", "", *notes, ""] + [render.markdown(t, missing) for t in tables]
        files[-1].write_text("\n".join(body))
    if "csv" in formats:
        files.append(out / "runs.csv")
        runs.assign(kept=runs["run_id"].isin(kept["run_id"])).to_csv(files[-1], index=False)
        files.append(out / "tables.csv")
        pd.concat([render.summary_csv(t) for t in tables]).to_csv(files[-1], index=False)
    if "html" in formats:
        files.append(out / "report.html")
        files[-1].write_text(render.html_page(title, tables, missing, notes))
    return Report(tables, missing, dropped, files)


def report_study(tracking_uri: str, study: str, out_dir: str | Path, **options) -> Report:
    """A report over a study's cell runs in MLflow (see :func:`build_report`)."""
    return build_report(runs_from_mlflow(tracking_uri, study), out_dir, f"Study {study}", **options)


def report_folders(folders: list[str | Path], out_dir: str | Path, **options) -> Report:
    """A report over stand-alone ``pagmfr train`` folders (see :func:`build_report`)."""
    return build_report(runs_from_folders(folders), out_dir, "Stand-alone runs", **options)


__all__ = ["FORMATS", "Report", "build_report", "report_folders", "report_study"]
