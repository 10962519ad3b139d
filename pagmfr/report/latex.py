r"""Tables as LaTeX with booktabs: each file is one ``table`` environment that a paper can
``\input`` as it is (with ``\usepackage{booktabs}`` and ``\usepackage{graphicx}``).

They fit a page: the per-category table is transposed (variants as rows) and split into
blocks of at most :data:`BLOCK_COLUMNS` categories (textures, then objects), and every block
shrinks to the line width only when it is wider. Changes against the reference are in the
component table, not in the per-category cells, which would not fit.
"""

from __future__ import annotations

import math

from pagmfr.categories import TEXTURE
from pagmfr.report.components import ComponentTable
from pagmfr.report.escape import identifier
from pagmfr.report.escape import latex as esc
from pagmfr.report.tables import MARKS, MetricTable, Row, Value, smallest_p
from pagmfr.report.text import metric_name

#: Category columns per block of the per-category table.
BLOCK_COLUMNS = 6
HEADER = (
    r"% pagmfr report: \input{} this file; needs \usepackage{booktabs} and \usepackage{graphicx}"
)


def _fit(lines: list[str]) -> list[str]:
    """A tabular shrunk to the line width when (and only when) it is wider."""
    return [r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%", *lines, "}"]


def _mark(mark: str) -> str:
    return rf"$^{{{mark}}}$" if mark else ""


def _value(value: Value | None, decimals: int, marked: bool = True) -> str:
    r"""``\textbf{86.0}\,{\scriptsize$\pm$1.4}$^{*}$`` (the mark when ``marked``); ``--``
    when missing."""
    if value is None:
        return "--"
    mean = f"{value.mean:.{decimals}f}"
    text = rf"\textbf{{{mean}}}" if value.best else mean
    if value.std is not None:
        text += rf"\,{{\scriptsize$\pm${value.std:.{decimals}f}}}"
    return text + (_mark(value.mark) if marked else "")


def _legend(pairs: int, reference: str, over: str) -> str:
    levels = " / ".join(f"$^{{{mark}}}$" for _, mark in reversed(MARKS))
    limits = " / ".join(str(level) for level, _ in reversed(MARKS))
    text = (
        f"{levels}: Holm-corrected Wilcoxon signed-rank p $<$ {limits} against "
        f"{esc(reference)} over {pairs} {over}"
    )
    floor = smallest_p(pairs)
    if not math.isnan(floor) and floor >= MARKS[-1][0]:
        text += f" (with {pairs} pairs p cannot go below {floor:.3g}: no mark can appear)"
    return text


def _environment(caption: str, label: str, body: list[str]) -> str:
    return "\n".join(
        [
            HEADER,
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\label{{tab:{identifier(label)}}}",
            *body,
            r"\end{table}",
            "",
        ]
    )


def _chunks(columns: list[Row]) -> list[list[Row]]:
    """``columns`` in near-equal chunks of at most :data:`BLOCK_COLUMNS`: blocks of equal
    width shrink alike."""
    count = max(1, math.ceil(len(columns) / BLOCK_COLUMNS))
    size = math.ceil(len(columns) / count)
    return [columns[i : i + size] for i in range(0, len(columns), size)]


def _blocks(table: MetricTable) -> list[tuple[str, list[Row]]]:
    """(group name, columns) per block: textures then objects, each group's categories and
    its mean, the overall mean last."""
    means = {row.label: row for row in table.rows if row.group}
    kinds = (("Textures", True, "Textures mean"), ("Objects", False, "Objects mean"))
    groups = []
    for name, is_texture, mean in kinds:
        columns = [r for r in table.rows if not r.group and (r.kind == TEXTURE) == is_texture]
        if columns:
            groups.append((name, columns + ([means[mean]] if mean in means else [])))
    if groups and "Mean" in means:
        groups[-1][1].append(means["Mean"])
    return [(name, chunk) for name, columns in groups for chunk in _chunks(columns)]


def _block(table: MetricTable, name: str, columns: list[Row]) -> list[str]:
    """One block: the variants as rows, ``columns`` (under a ``name`` header, the overall
    mean as "All" outside it) as columns."""
    grouped = [r for r in columns if r.label != "Mean"]
    heads = [("Mean" if r.group else esc(r.label)) for r in grouped] + ["All"] * (
        len(columns) - len(grouped)
    )
    span = len(grouped)
    lines = [
        rf"\begin{{tabular}}{{l*{{{len(columns)}}}{{c}}}}",
        r"\toprule",
        rf" & \multicolumn{{{span}}}{{c}}{{{name}}}" + " &" * (len(columns) - span) + r" \\",
        rf"\cmidrule(lr){{2-{span + 1}}}",
        " & ".join(["Variant", *heads]) + r" \\",
        r"\midrule",
    ]
    for variant in table.variants:
        cells = [_value(r.values[variant], table.decimals) for r in columns]
        lines.append(" & ".join([esc(variant), *cells]) + r" \\")
    return _fit([*lines, r"\bottomrule", r"\end{tabular}"])


def metric_table(table: MetricTable, label: str) -> str:
    """One metric's per-category table, transposed and split into blocks that fit."""
    pairs = max((t.pairs for t in table.tests), default=0)
    over = "categories" if table.test_over == "categories" else "category x seed pairs"
    unit = r" (\%)" if table.scale == 100 else ""
    caption = (
        f"{esc(metric_name(table.metric))}{unit} per category: mean $\\pm$ sample std over "
        "seeds; bold: best per category; All: mean over the categories, where "
        + _legend(pairs, table.reference, over)
        + ". Changes against the reference: see the component table."
    )
    body = [r"\small", r"\renewcommand{\arraystretch}{0.92}"]
    for i, (name, columns) in enumerate(_blocks(table)):
        body += ([r"\par\smallskip"] if i else []) + _block(table, name, columns)
    return _environment(caption, f"{label}-{table.metric}", body)


def components(table: ComponentTable, label: str) -> str:
    """The component table: variants x metrics (mean $\\pm$ std, change and its mark)."""
    over = "categories" if table.test_over == "categories" else "category x seed pairs"
    pairs = max((c.test.pairs for c in table.cells.values() if c.test is not None), default=0)
    unit = "in percent" if table.scale == 100 else "raw"
    caption = (
        f"Component ablation ({unit}): mean over {table.categories} categories $\\pm$ sample "
        f"std over {len(table.seeds)} seed(s); bold: best per metric; $\\Delta$: change against "
        f"{esc(table.reference)}; " + _legend(pairs, table.reference, over) + "."
    )
    columns = 2 * len(table.metrics)
    groups = " & ".join(rf"\multicolumn{{2}}{{c}}{{{esc(metric_name(m))}}}" for m in table.metrics)
    rules = " ".join(
        rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(table.metrics))
    )
    lines = [
        rf"\begin{{tabular}}{{l*{{{columns}}}{{c}}}}",
        r"\toprule",
        rf" & {groups} \\",
        rules,
        "Variant" + r" & Mean & $\Delta$" * len(table.metrics) + r" \\",
        r"\midrule",
    ]
    for variant in table.variants:
        cells = [esc(variant)]
        for metric in table.metrics:
            cell = table.cell(variant, metric)
            value = cell.value
            cells.append(_value(value, table.decimals, marked=False))
            if value is None or value.delta is None or variant == table.reference:
                cells.append("--")
            else:
                mark = cell.test.mark if cell.test else ""
                cells.append(
                    f"${value.delta:+.{table.decimals}f}{'^{' + mark + '}' if mark else ''}$"
                )
        lines.append(" & ".join(cells) + r" \\")
    body = _fit([*lines, r"\bottomrule", r"\end{tabular}"])
    return _environment(caption, f"{label}-components", body)
