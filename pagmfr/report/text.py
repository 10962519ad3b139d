"""The words and numbers every format shares: metric names, cell values, notes and marks, so
a number, a mark or a caption reads the same in LaTeX, Markdown, CSV and HTML. The text is
plain and unescaped: each output escapes it whole."""

from __future__ import annotations

import math
from collections.abc import Callable

from pagmfr.report.components import ComponentTable
from pagmfr.report.ranks import FRIEDMAN_VARIANTS, Ranking
from pagmfr.report.select import Missing
from pagmfr.report.tables import MARKS, MetricTable, PairedTest, Value, smallest_p

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


def test_design(tests: list[PairedTest], test_over: str) -> tuple[str, str]:
    """What the tests paired ("15 categories"), and a note when so few pairs make any mark
    impossible ("" otherwise)."""
    pairs = max((t.pairs for t in tests), default=0)
    over = f"{pairs} categories" if test_over == "categories" else f"{pairs} category x seed pairs"
    floor = smallest_p(pairs)
    if math.isnan(floor) or floor < MARKS[-1][0]:
        return over, ""
    return over, f"with {pairs} pairs p cannot go below {floor:.3g}: no mark can appear"


def significance_note(table: MetricTable) -> str:
    """What the marks mean: the test, its pairs, the correction, and when too few pairs make
    any mark impossible."""
    levels = ", ".join(f"{mark}: p < {level}" for level, mark in reversed(MARKS))
    over, impossible = test_design(table.tests, table.test_over)
    note = (
        f"{levels} (Wilcoxon signed-rank test against {table.reference} over {over}, "
        f"Holm-corrected over the {len(table.tests)} variants)."
    )
    return note + (f" {impossible[0].upper()}{impossible[1:]}." if impossible else "")


def _friedman(ranking: Ranking) -> str:
    """What Friedman's test said, and whether it let the pairwise tests tell variants apart."""
    if len(ranking.variants) < FRIEDMAN_VARIANTS:
        return (
            f"With {len(ranking.variants)} variants there is no Friedman test (it needs "
            f"{FRIEDMAN_VARIANTS}): the Wilcoxon signed-rank test alone decides."
        )
    if not ranking.friedman_ran:
        return "No Friedman test: every block is a tie, so one bar joins all variants."
    result = (
        f"Friedman test: chi-square {ranking.friedman_statistic:.2f}, p = {ranking.friedman_p:.3g}"
    )
    if ranking.friedman_p >= ranking.alpha:
        return (
            f"{result}, not below alpha: no variant differs significantly, so one bar joins "
            "them all (the pairwise tests are not used)."
        )
    return f"{result}."


def ranking_note(ranking: Ranking) -> str:
    """A critical-difference diagram's caption: what it ranks over, the average ranks, the
    tests behind its bars and alpha; or, for a metric without one, why (one line). ASCII only:
    LaTeX prints it as it is."""
    if ranking.shortfall:
        return ranking.shortfall[0].upper() + ranking.shortfall[1:] + "."
    incomplete = ranking.all_blocks - ranking.blocks
    blocks = f"{ranking.blocks} blocks (category x seed" + (
        f"; {incomplete} block(s) without every variant left out)" if incomplete else ")"
    )
    ranks = ", ".join(f"{v} {ranking.average_ranks[v]:.2f}" for v in ranking.variants)
    text = (
        f"Critical-difference diagram of {metric_name(ranking.metric)}: average rank over "
        f"{blocks}, 1 = best, ties sharing their mean rank: {ranks}. {_friedman(ranking)} "
        "A bar joins variants that pairwise Wilcoxon signed-rank tests over the blocks, "
        f"Holm-corrected, do not tell apart at alpha = {ranking.alpha:g}."
    )
    if ranking.smallest_holm_p >= ranking.alpha:
        text += (
            f" With {ranking.blocks} blocks and {len(ranking.pairs)} pair(s), no pair can "
            f"differ at this alpha (the smallest Holm-corrected p is "
            f"{ranking.smallest_holm_p:.3g})."
        )
    if ranking.left_out:
        shown = ", ".join(f"{v} ({n} of {ranking.all_blocks})" for v, n in ranking.left_out.items())
        text += f" Not ranked (a value in fewer than half of the blocks): {shown}."
    return text


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


def component_grid(
    table: ComponentTable, esc: Callable[[str], str], bold: Callable[[str], str]
) -> tuple[list[str], list[list[str]]]:
    """The component table's header and rows as text cells (``81.5 ± 1.4``, ``−3.5*``), user
    text passed through ``esc`` and the best mean per metric through ``bold``."""
    header = ["Variant"] + [x for m in table.metrics for x in (esc(metric_name(m)), "Δ")]
    rows = []
    for variant in table.variants:
        row = [esc(variant)]
        for metric in table.metrics:
            cell = table.cell(variant, metric)
            shown = parts(cell.value, table.decimals, variant == table.reference)
            if shown is None:
                row += ["–", "–"]
                continue
            mean, std, delta = shown
            value = esc(mean + (f" ± {std}" if std else ""))
            mark = cell.test.mark if cell.test else ""
            row += [
                bold(value) if cell.value.best else value,
                esc(delta.replace("-", "−") + mark) if delta else "–",
            ]
        rows.append(row)
    return header, rows
