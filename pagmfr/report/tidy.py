"""Tables as tidy CSV (one row per value), safe to open in a spreadsheet: see
:func:`pagmfr.report.escape.csv_cell`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pagmfr.report.components import ComponentTable
from pagmfr.report.escape import csv_frame
from pagmfr.report.tables import MetricTable
from pagmfr.report.text import unit


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as CSV with every text cell made formula-safe."""
    csv_frame(frame).to_csv(path, index=False)
    return path


def metric_rows(table: MetricTable) -> pd.DataFrame:
    """One row per table cell (metric, row, variant, mean, std, seeds, delta, best, mark)."""
    rows = []
    for row in table.rows:
        for variant in table.variants:
            value = row.values[variant]
            rows.append(
                {
                    "metric": table.metric,
                    "row": row.label,
                    "group": row.group,
                    "variant": variant,
                    "mean": None if value is None else value.mean,
                    "std": None if value is None else value.std,
                    "seeds": None if value is None else value.seeds,
                    "delta": None if value is None else value.delta,
                    "best": None if value is None else value.best,
                    "mark": None if value is None else value.mark,
                }
            )
    return pd.DataFrame(rows)


def component_rows(table: ComponentTable) -> pd.DataFrame:
    """One row per (variant, metric) of the component table, with its test."""
    rows = []
    for variant in table.variants:
        for metric in table.metrics:
            cell = table.cell(variant, metric)
            value, test = cell.value, cell.test
            rows.append(
                {
                    "variant": variant,
                    "metric": metric,
                    "unit": unit(table.scale),
                    "mean": None if value is None else value.mean,
                    "std": None if value is None else value.std,
                    "seeds": None if value is None else value.seeds,
                    "categories": table.categories,
                    "delta": None if value is None or variant == table.reference else value.delta,
                    "reference": table.reference,
                    "test_pairs": None if test is None else test.pairs,
                    "p_value": None if test is None else test.p_value,
                    "p_holm": None if test is None else test.p_holm,
                    "mark": "" if test is None else test.mark,
                }
            )
    return pd.DataFrame(rows)
