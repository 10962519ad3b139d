"""The study's report on its MLflow run: the tables as artifacts, the components as metrics."""

from __future__ import annotations

import re
import tempfile

from pagmfr.engine import TEST_METRICS
from pagmfr.study.tracking import StudyTracker


def _metric_name(text: str) -> str:
    """``text`` as a part of an MLflow metric name (letters, digits, ``_ - . space``)."""
    return re.sub(r"[^\w\-. ]", "_", text).strip(". ") or "_"


def record_study_report(tracker: StudyTracker, step: int) -> str:
    """The study's report (HTML, Markdown, LaTeX, CSV) as the study run's ``report/``
    artifacts, and its component table as the study run's metrics at ``step``
    (``au_pro/full model``: mean over categories, ``au_pro_std/full model``: std over seeds,
    as fractions). Returns why there is none, or ""."""
    from pagmfr.report import report_study

    with tempfile.TemporaryDirectory() as folder:
        try:
            report = report_study(
                tracker.tracking_uri, tracker.study, folder, metrics=list(TEST_METRICS)
            )
        except (ValueError, OSError) as err:
            return f"no report on the study run: {str(err).splitlines()[0]}"
        tracker.log_artifacts(tracker.parent_id, folder, "report")
    table = report.components
    aggregates = {}
    for (variant, metric), cell in table.cells.items():
        if cell.value is None:
            continue
        aggregates[f"{metric}/{_metric_name(variant)}"] = cell.value.mean / table.scale
        if cell.value.std is not None:
            aggregates[f"{metric}_std/{_metric_name(variant)}"] = cell.value.std / table.scale
    tracker.log_metrics(tracker.parent_id, aggregates, step)
    return ""
