"""Tables as tidy CSV (one row per value), safe to open in a spreadsheet: see
:func:`pagmfr.report.escape.csv_cell`. Every row of a table carries its protocol line in a
``protocol`` column: a comment or trailing row would trip CSV readers (pandas among them), and
a file beside it would get lost."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pagmfr.report.components import ComponentTable
from pagmfr.report.escape import csv_frame
from pagmfr.report.ranks import Ranking
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
                    "protocol": table.protocol.text,
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
                    "protocol": table.protocol.text,
                }
            )
    return pd.DataFrame(rows)


def _about(table: MetricTable, ranking: Ranking) -> dict:
    """The columns every row of a ranking shares, after its own."""
    return {"blocks": ranking.blocks, "alpha": ranking.alpha, "protocol": table.protocol.text}


def rank_rows(table: MetricTable, ranking: Ranking) -> pd.DataFrame:
    """One row per ranked variant of the table's metric: its average rank, Friedman's test."""
    return pd.DataFrame(
        {
            "metric": ranking.metric,
            "variant": variant,
            "average_rank": ranking.average_ranks[variant],
            "friedman_statistic": ranking.friedman_statistic,
            "friedman_p": ranking.friedman_p,
            **_about(table, ranking),
        }
        for variant in ranking.variants
    )


def pair_rows(table: MetricTable, ranking: Ranking) -> pd.DataFrame:
    """One row per pair of ranked variants: its Wilcoxon test over the blocks, Holm-corrected,
    and whether the diagram tells the two apart."""
    return pd.DataFrame(
        {
            "metric": ranking.metric,
            "first": pair.first,
            "second": pair.second,
            "p_value": pair.p_value,
            "p_holm": pair.p_holm,
            "significant": pair.significant,
            **_about(table, ranking),
        }
        for pair in ranking.pairs
    )
