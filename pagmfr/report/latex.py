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
from pagmfr.report.cd_diagram import Diagram
from pagmfr.report.components import ComponentTable
from pagmfr.report.escape import identifier
from pagmfr.report.escape import latex as esc
from pagmfr.report.protocol import Protocol
from pagmfr.report.tables import MARKS, MetricTable, PairedTest, Row, Value
from pagmfr.report.text import metric_name, ranking_note, test_design

#: Category columns per block of the per-category table.
BLOCK_COLUMNS = 6
#: Lines a block adds to its variants' rows: its rules, headers and the gap before it.
BLOCK_HEADER_LINES = 4
#: Lines of the table's font the protocol under it takes, set one size smaller (its settings
#: wrap over about three lines).
PROTOCOL_LINES = 3
#: The protocol's font under a table in each font.
SMALLER = {r"\small": r"\footnotesize", r"\footnotesize": r"\scriptsize", r"\scriptsize": r"\tiny"}
#: How many table lines fit one page of an article, with the caption, at each font size
#: (measured with pdflatex: 12, 13 and 17 variants in three blocks).
PAGE_LINES = ((48, r"\small"), (54, r"\footnotesize"), (63, r"\scriptsize"))
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


def _legend(tests: list[PairedTest], reference: str, test_over: str) -> str:
    levels = " / ".join(f"$^{{{mark}}}$" for _, mark in reversed(MARKS))
    limits = " / ".join(str(level) for level, _ in reversed(MARKS))
    over, impossible = test_design(tests, test_over)
    text = (
        f"{levels}: Holm-corrected Wilcoxon signed-rank p $<$ {limits} against "
        f"{esc(reference)} over {over}"
    )
    return text + (f" ({impossible})" if impossible else "")


def _environment(caption: str, label: str, body: list[str], kind: str = "table") -> str:
    """A ``table`` float (label ``tab:...``, caption above) or a ``figure`` (``fig:...``,
    caption below its first line, the graphic), as papers place them."""
    head = [rf"\caption{{{caption}}}", rf"\label{{{kind[:3]}:{identifier(label)}}}"]
    inner = [*head, *body] if kind == "table" else [*body[:1], *head, *body[1:]]
    return "\n".join(
        [HEADER, rf"\begin{{{kind}}}[t]", r"\centering", *inner, rf"\end{{{kind}}}", ""]
    )


def _protocol(protocol: Protocol, font: str = r"\footnotesize") -> list[str]:
    """The protocol line under a table or figure, in a left-aligned paragraph in ``font``."""
    return [rf"\par\smallskip{{{font}\raggedright " + esc(protocol.sentence) + r"\par}"]


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


def _font(lines: int) -> str | None:
    """The largest font at which ``lines`` table lines fit one page with their caption, or
    None when none does."""
    return next((font for most, font in PAGE_LINES if lines <= most), None)


def metric_table(table: MetricTable, label: str) -> str:
    """One metric's per-category table, transposed and split into blocks that fit the width;
    in a smaller font when they would not fit the height, in one float per block when they
    would not fit even then."""
    unit = r" (\%)" if table.scale == 100 else ""
    caption = (
        f"{esc(metric_name(table.metric))}{unit} per category: mean $\\pm$ sample std over "
        "seeds; bold: best per category; All: mean over the categories, where "
        + _legend(table.tests, table.reference, table.test_over)
        + ". Changes against the reference: see the component table."
    )
    blocks = [_block(table, name, columns) for name, columns in _blocks(table)]
    tag = f"{label}-{table.metric}"
    font = _font(len(blocks) * (len(table.variants) + BLOCK_HEADER_LINES) + PROTOCOL_LINES)
    if font is not None:
        body = [font, r"\renewcommand{\arraystretch}{0.92}"]
        for i, block in enumerate(blocks):
            body += ([r"\par\smallskip"] if i else []) + block
        return _environment(caption, tag, body + _protocol(table.protocol, SMALLER[font]))
    lines = len(table.variants) + BLOCK_HEADER_LINES + PROTOCOL_LINES
    font = _font(lines) or PAGE_LINES[-1][1]
    protocol = _protocol(table.protocol, SMALLER[font])
    return "\n".join(
        _environment(
            f"{caption} Part {i} of {len(blocks)}.",
            f"{tag}-{i}",
            [font, r"\renewcommand{\arraystretch}{0.92}", *block, *protocol],
        )
        for i, block in enumerate(blocks, start=1)
    )


def components(table: ComponentTable, label: str) -> str:
    """The component table: variants x metrics (mean $\\pm$ std, change and its mark)."""
    tests = [c.test for c in table.cells.values() if c.test is not None]
    unit = "in percent" if table.scale == 100 else "raw"
    caption = (
        f"Component ablation ({unit}): mean over {table.categories} categories $\\pm$ sample "
        f"std over {len(table.seeds)} seed(s); bold: best per metric; $\\Delta$: change against "
        f"{esc(table.reference)}; " + _legend(tests, table.reference, table.test_over) + "."
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
    return _environment(caption, f"{label}-components", body + _protocol(table.protocol))


def cd_figure(table: MetricTable, diagram: Diagram, label: str) -> str:
    r"""The metric's critical-difference diagram as a ``figure`` that includes
    ``<stem>.pdf`` (found beside the paper, or through ``\graphicspath``), with the tests in
    its caption and the table's protocol; for a metric without one, a comment saying why."""
    note = esc(ranking_note(diagram.ranking))
    if diagram.ranking.shortfall:
        return f"{HEADER}\n% {note}\n"
    body = [rf"\includegraphics[width=\linewidth]{{{diagram.stem}}}", *_protocol(table.protocol)]
    return _environment(note, f"{label}-{diagram.stem}", body, kind="figure")
