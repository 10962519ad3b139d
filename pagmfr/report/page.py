"""The report as one self-contained HTML page: the component table, every metric's table
with its protocol and tests, figures as PNG data URIs, the critical-difference diagrams as SVG
data URIs and the missing cells, viewable offline. Every user string is escaped, in text and
in attributes."""

from __future__ import annotations

import base64
import io
import math

from pagmfr.report import escape
from pagmfr.report.cd_diagram import Diagram
from pagmfr.report.components import ComponentTable
from pagmfr.report.escape import html as esc
from pagmfr.report.protocol import Protocol
from pagmfr.report.select import Missing
from pagmfr.report.tables import MetricTable
from pagmfr.report.text import (
    component_grid,
    metric_name,
    missing_lines,
    plain_cell,
    ranking_note,
    scale_note,
    significance_note,
    test_lines,
)

STYLE = (
    "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:center}td:first-child{text-align:left}"
    "tr.group td{background:#f2f2f2}b{color:#000}.note{color:#555}</style>"
)


def _figure_png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figures(table: MetricTable) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    label = escape.plot_label
    name = label(metric_name(table.metric))
    images = []
    overall = table.row("Mean")
    if overall is not None:
        present = [(v, overall.values[v]) for v in table.variants if overall.values[v] is not None]
        if present:
            fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(present) + 2), 3))
            ax.bar(
                range(len(present)),
                [x.mean for _, x in present],
                yerr=[x.std or 0 for _, x in present],
                capsize=4,
                color="#4c72b0",
            )
            ax.set_xticks(
                range(len(present)), [label(v) for v, _ in present], rotation=30, ha="right"
            )
            ax.set_ylabel(name)
            ax.set_title(f"Mean {name} per variant (error bars: std over seeds)")
            images.append(_figure_png(fig))
            plt.close(fig)
    categories = [r for r in table.rows if not r.group]
    grid = [
        [math.nan if r.values[v] is None else r.values[v].mean for v in table.variants]
        for r in categories
    ]
    fig, ax = plt.subplots(
        figsize=(max(4, 0.9 * len(table.variants) + 2), 0.35 * len(categories) + 1.5)
    )
    shown = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(table.variants)), map(label, table.variants), rotation=30, ha="right")
    ax.set_yticks(range(len(categories)), [label(r.label) for r in categories])
    fig.colorbar(shown, ax=ax, label=name)
    ax.set_title(f"{name}: category x variant")
    images.append(_figure_png(fig))
    plt.close(fig)
    return images


def _row(cells: list[str], tag: str = "td", css: str = "") -> str:
    attribute = f" class='{css}'" if css else ""
    return f"<tr{attribute}>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _bold(text: str) -> str:
    """A plain cell's bold markers (NUL, SOH: never in a number) as <b>, after escaping."""
    return esc(text).replace("\x00", "<b>").replace("\x01", "</b>")


def _protocol(protocol: Protocol) -> str:
    return f"<p class='note protocol'>{esc(protocol.sentence)}</p>"


def _diagram(diagram: Diagram) -> list[str]:
    """The critical-difference diagram (its SVG, inline as a data URI) and its caption, or the
    line that says why there is none."""
    note = f"<p class='note'>{esc(ranking_note(diagram.ranking))}</p>"
    if diagram.ranking.shortfall:
        return [note]
    source = "data:image/svg+xml;base64," + base64.b64encode(diagram.svg).decode()
    name = f"{diagram.ranking.metric} critical-difference diagram"
    return [f"<img alt='{esc(name)}' src='{source}'>", note]


def _metric_section(table: MetricTable, diagram: Diagram) -> list[str]:
    parts_ = [
        f"<h2 id='{esc(escape.identifier(table.metric))}'>{esc(metric_name(table.metric))}</h2>",
        f"<p class='note'>{esc(scale_note(table))}<br>{esc(significance_note(table))}</p>",
        "<table>",
        _row([esc(h) for h in ["Category", *table.variants]], "th"),
    ]
    for row in table.rows:
        cells = [
            _bold(plain_cell(row.values[v], table, v, ("\x00", "\x01"))) for v in table.variants
        ]
        parts_.append(_row([esc(row.label), *cells], css="group" if row.group else ""))
    parts_ += [
        "</table>",
        _protocol(table.protocol),
        "<table>",
        _row(
            [
                "Variant",
                "Pairs",
                "Mean change",
                f"p-value (Wilcoxon vs {esc(table.reference)})",
                "Holm p-value",
            ],
            "th",
        ),
        *(_row([esc(x) for x in line]) for line in test_lines(table)),
        "</table>",
    ]
    parts_ += [f"<img alt='{esc(table.metric)} figure' src='{src}'>" for src in _figures(table)]
    return parts_ + _diagram(diagram)


def _components(table: ComponentTable) -> list[str]:
    header, rows = component_grid(table, esc, lambda text: f"<b>{text}</b>")
    return [
        "<h2 id='components'>Components</h2>",
        "<table>",
        _row(header, "th"),
        *map(_row, rows),
        "</table>",
        _protocol(table.protocol),
    ]


def page(
    title: str,
    notes: list[str],
    components: ComponentTable,
    tables: list[MetricTable],
    missing: list[Missing],
    diagrams: dict[str, Diagram],
) -> str:
    """The whole report as one page with no external resources (``diagrams``: by metric)."""
    body = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        STYLE + "</head><body>",
        f"<h1>{esc(title)}</h1>",
        *(f"<p class='note'>{esc(n)}</p>" for n in notes),
        *_components(components),
    ]
    for table in tables:
        body += _metric_section(table, diagrams[table.metric])
    body.append(
        "<h2 id='missing'>Missing cells</h2><ul>"
        + "".join(f"<li>{esc(line)}</li>" for line in missing_lines(missing))
        + "</ul>"
    )
    body.append("</body></html>")
    return "\n".join(body)
