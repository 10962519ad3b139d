"""The words and numbers every format shares: metric names, cell values, notes and marks, so
a number, a mark or a caption reads the same in LaTeX, Markdown, CSV and HTML. The text is
plain and unescaped: each output escapes it whole."""

from __future__ import annotations

import math
from collections.abc import Callable

from pagmfr.report.components import ComponentTable
from pagmfr.report.select import Missing
from pagmfr.report.tables import MARKS, MetricTable, Value, smallest_p

METRIC_NAMES = {
    "image_auroc": "Image AUROC",
    "pixel_auroc": "Pixel AUROC",
    "au_pro": "AU-PRO",
    "pixel_f1_max": "Pixel F1-max",
}


def metric_name(metric: str) -> str:
    """A metric's name as papers print it (``au_pro`` -> AU-PRO)."""
    return METRIC_NAMES.get(metric, metric)


def parts(value: Value | None, decimals: int, is_reference: bool) -> tuple[str, str, str] | None:
    """A cell's mean, std ("" with one seed) and change against the reference ("" for the
    reference itself), formatted; None for a missing cell."""
    if value is None:
        return None
    std = "" if value.std is None else f"{value.std:.{decimals}f}"
    delta = "" if value.delta is None or is_reference else f"{value.delta:+.{decimals}f}"
    return f"{value.mean:.{decimals}f}", std, delta


def plain_cell(
    value: Value | None,
    table: MetricTable,
    variant: str,
    bold: tuple[str, str],
    mark: Callable[[str], str] = str,
) -> str:
    """``86.0 ± 1.4 (−5.0)*`` with ``bold`` around the best and the significance mark as
    ``mark`` writes it; "–" when missing."""
    shown = parts(value, table.decimals, variant == table.reference)
    if shown is None:
        return "–"
    mean, std, delta = shown
    text = mean + (f" ± {std}" if std else "")
    if value.best:
        text = f"{bold[0]}{text}{bold[1]}"
    return text + (f" ({delta.replace('-', '−')})" if delta else "") + mark(value.mark)


def unit(scale: float) -> str:
    """How the values are expressed."""
    return "in percent" if scale == 100 else "raw"


def scale_note(table: MetricTable) -> str:
    """What a metric table's cells mean."""
    return (
        f"{metric_name(table.metric)} ({unit(table.scale)}): mean ± sample std over seeds; "
        f"bold: best in the row; (±x): change against {table.reference}."
    )


def significance_note(table: MetricTable) -> str:
    """What the marks mean: the test, its pairs, the correction, and when too few pairs make
    any mark impossible."""
    levels = ", ".join(f"{mark}: p < {level}" for level, mark in reversed(MARKS))
    pairs = max((t.pairs for t in table.tests), default=0)
    over = "categories" if table.test_over == "categories" else "category x seed pairs"
    note = (
        f"{levels} (Wilcoxon signed-rank test against {table.reference} over {pairs} "
        f"{over}, Holm-corrected over the {len(table.tests)} variants)."
    )
    floor = smallest_p(pairs)
    if not math.isnan(floor) and floor >= MARKS[-1][0]:
        note += f" With {pairs} pairs the smallest possible p is {floor:.3g}: no mark can appear."
    return note


def test_lines(table: MetricTable) -> list[tuple[str, str, str, str, str]]:
    """Per variant: (variant, pairs, mean change, p, Holm p + mark), unescaped."""
    lines = []
    for t in table.tests:
        p = "n/a" if math.isnan(t.p_value) else f"{t.p_value:.3g}"
        holm = "n/a" if math.isnan(t.p_holm) else f"{t.p_holm:.3g}{t.mark}"
        delta = "n/a" if math.isnan(t.mean_delta) else f"{t.mean_delta:+.{table.decimals}f}"
        lines.append((t.variant, str(t.pairs), delta, p, holm))
    return lines


def missing_lines(missing: list[Missing]) -> list[str]:
    """One line per missing cell with its state and last error, or a line saying there are none."""
    if not missing:
        return ["Every cell has a finished run."]
    lines = [f"Missing cells ({len(missing)}), shown as –:"]
    for m in missing:
        reason = f" ({m.error})" if m.error else ""
        lines.append(f"{m.variant} / {m.category} / seed {m.seed}: {m.state}{reason}")
    return lines


def component_parts(table: ComponentTable, variant: str, metric: str) -> tuple[str, str, bool]:
    """One component cell as (``81.5 ± 1.4``, ``−3.5*``, best), "–" where there is nothing."""
    cell = table.cell(variant, metric)
    shown = parts(cell.value, table.decimals, variant == table.reference)
    if shown is None:
        return "–", "–", False
    mean, std, delta = shown
    mark = cell.test.mark if cell.test else ""
    change = delta.replace("-", "−") + mark if delta else "–"
    return mean + (f" ± {std}" if std else ""), change, cell.value.best
