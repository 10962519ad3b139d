"""Tables as Markdown (GitHub's table syntax), every user string escaped."""

from __future__ import annotations

from pagmfr.report import escape, text
from pagmfr.report.cd_diagram import Diagram
from pagmfr.report.components import ComponentTable
from pagmfr.report.select import Missing
from pagmfr.report.tables import MetricTable

esc = escape.markdown


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows)]


def _diagram(diagram: Diagram) -> list[str]:
    """The critical-difference diagram (its SVG beside the report) and its caption, or the
    line that says why there is none."""
    note = esc(text.ranking_note(diagram.ranking))
    if diagram.ranking.shortfall:
        return [note, ""]
    name = esc(f"Critical-difference diagram of {text.metric_name(diagram.ranking.metric)}")
    return [f"![{name}]({diagram.stem}.svg)", "", note, ""]


def metric_table(table: MetricTable, diagram: Diagram) -> str:
    """One metric's table with its protocol, paired tests and critical-difference diagram."""
    rows = []
    for row in table.rows:
        label = f"**{esc(row.label)}**" if row.group else esc(row.label)
        rows.append(
            [
                label,
                *(
                    text.plain_cell(row.values[v], table, v, ("**", "**"), esc)
                    for v in table.variants
                ),
            ]
        )
    lines = [
        f"### {esc(text.metric_name(table.metric))}",
        "",
        esc(text.scale_note(table) + " " + text.significance_note(table)),
        "",
        *_table(["Category", *map(esc, table.variants)], rows),
        "",
        esc(table.protocol.sentence),
        "",
        f"Wilcoxon signed-rank tests against {esc(table.reference)}:",
        "",
        *_table(
            ["Variant", "Pairs", "Mean change", "p-value", "Holm p-value"],
            [[esc(x) for x in line] for line in text.test_lines(table)],
        ),
        "",
        *_diagram(diagram),
    ]
    return "\n".join(lines)


def components(table: ComponentTable, notes: list[str]) -> str:
    """The component table: variants x metrics, mean ± std, change and mark."""
    header, rows = text.component_grid(table, esc, lambda shown: f"**{shown}**")
    protocol = esc(table.protocol.sentence)
    return "\n".join([*(esc(n) for n in notes), "", *_table(header, rows), "", protocol, ""])


def report(
    title: str,
    notes: list[str],
    tables: list[MetricTable],
    missing: list[Missing],
    diagrams: dict[str, Diagram],
) -> str:
    """The whole report: notes, every metric's table and diagram (``diagrams``: by metric),
    the missing cells."""
    body = [f"# {esc(title)}", "", *(esc(n) for n in notes), ""]
    body += [metric_table(t, diagrams[t.metric]) for t in tables]
    lines = [esc(line) for line in text.missing_lines(missing)]
    body += [lines[0], *(f"- {line}" for line in lines[1:]), ""]
    return "\n".join(body)
