"""Tables as LaTeX (booktabs), Markdown, CSV and one self-contained HTML page with figures."""

from __future__ import annotations

import base64
import html
import io
import math

import pandas as pd

from pagmfr.report.tables import MetricTable, Missing, Value

METRIC_NAMES = {
    "image_auroc": "Image AUROC",
    "pixel_auroc": "Pixel AUROC",
    "au_pro": "AU-PRO",
    "pixel_f1_max": "Pixel F1-max",
}
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def metric_name(metric: str) -> str:
    """A metric's name as papers print it (``au_pro`` -> AU-PRO)."""
    return METRIC_NAMES.get(metric, metric)


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _parts(value: Value | None, decimals: int, is_reference: bool) -> tuple[str, str, str] | None:
    if value is None:
        return None
    std = "" if value.std is None else f"{value.std:.{decimals}f}"
    delta = "" if value.delta is None or is_reference else f"{value.delta:+.{decimals}f}"
    return f"{value.mean:.{decimals}f}", std, delta


def _plain_cell(
    value: Value | None, table: MetricTable, variant: str, bold: tuple[str, str]
) -> str:
    parts = _parts(value, table.decimals, variant == table.reference)
    if parts is None:
        return "–"
    mean, std, delta = parts
    text = mean + (f" ± {std}" if std else "")
    if value.best:
        text = f"{bold[0]}{text}{bold[1]}"
    return text + (f" ({delta.replace('-', '−')})" if delta else "")


def _scale_note(table: MetricTable) -> str:
    unit = "in percent" if table.scale == 100 else "raw"
    return (
        f"{metric_name(table.metric)} ({unit}): mean ± sample std over seeds; "
        "bold: best in the row; "
        f"(±x): change against {table.reference}."
    )


def _test_lines(table: MetricTable) -> list[tuple[str, str, str, str]]:
    lines = []
    for t in table.tests:
        p = "n/a" if math.isnan(t.p_value) else f"{t.p_value:.3g}"
        delta = "n/a" if math.isnan(t.mean_delta) else f"{t.mean_delta:+.{table.decimals}f}"
        lines.append((t.variant, str(t.categories), delta, p))
    return lines


def markdown(table: MetricTable, missing: list[Missing]) -> str:
    """One metric's table, its paired tests and the missing cells, as Markdown."""
    header = ["Category", *table.variants]
    lines = [
        f"### {metric_name(table.metric)}",
        "",
        _scale_note(table),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table.rows:
        label = f"**{row.label}**" if row.group else row.label
        cells = [_plain_cell(row.values[v], table, v, ("**", "**")) for v in table.variants]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines += [
        "",
        f"Wilcoxon signed-rank test against {table.reference}, over categories:",
        "",
        "| Variant | Categories | Mean change | p-value |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(parts) + " |" for parts in _test_lines(table)]
    lines += ["", *missing_lines(missing), ""]
    return "\n".join(lines)


def missing_lines(missing: list[Missing]) -> list[str]:
    """One line per missing cell with its state and last error, or a line saying there are none."""
    if not missing:
        return ["Every cell has a finished run."]
    lines = [f"Missing cells ({len(missing)}), shown as –:"]
    for m in missing:
        reason = f" ({m.error})" if m.error else ""
        lines.append(f"- {m.variant} / {m.category} / seed {m.seed}: {m.state}{reason}")
    return lines


def latex(table: MetricTable) -> str:
    """A booktabs table ready to \\input; needs \\usepackage{booktabs}."""
    columns = "l" + "c" * len(table.variants)
    header = " & ".join(["Category", *(latex_escape(v) for v in table.variants)]) + r" \\"
    body, previous_group = [], None
    for row in table.rows:
        if previous_group is not None and row.group != previous_group:
            body.append(r"\midrule")
        previous_group = row.group
        cells = []
        for variant in table.variants:
            value = row.values[variant]
            parts = _parts(value, table.decimals, variant == table.reference)
            if parts is None:
                cells.append("--")
                continue
            mean, std, delta = parts
            text = mean + (rf"\,$\pm$\,{std}" if std else "")
            text = rf"\textbf{{{text}}}" if value.best else text
            cells.append(
                text + (rf" {{\scriptsize({delta.replace('-', '$-$')})}}" if delta else "")
            )
        label = rf"\textit{{{latex_escape(row.label)}}}" if row.group else latex_escape(row.label)
        body.append(" & ".join([label, *cells]) + r" \\")
    caption = latex_escape(_scale_note(table))
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\label{{tab:{table.metric}}}",
            rf"\begin{{tabular}}{{{columns}}}",
            r"\toprule",
            header,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    )


def summary_csv(table: MetricTable) -> pd.DataFrame:
    """One row per table cell (metric, row, variant, mean, std, seeds, delta, best)."""
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
                }
            )
    return pd.DataFrame(rows)


def _figure_png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figures(table: MetricTable) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    images = []
    overall = next((r for r in table.rows if r.label == "Mean"), None)
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
            ax.set_xticks(range(len(present)), [v for v, _ in present], rotation=30, ha="right")
            ax.set_ylabel(metric_name(table.metric))
            ax.set_title(
                f"Mean {metric_name(table.metric)} per variant (error bars: std over seeds)"
            )
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
    ax.set_xticks(range(len(table.variants)), table.variants, rotation=30, ha="right")
    ax.set_yticks(range(len(categories)), [r.label for r in categories])
    fig.colorbar(shown, ax=ax, label=metric_name(table.metric))
    ax.set_title(f"{metric_name(table.metric)}: category x variant")
    images.append(_figure_png(fig))
    plt.close(fig)
    return images


def html_page(
    title: str, tables: list[MetricTable], missing: list[Missing], notes: list[str]
) -> str:
    """One page, no external resources: tables and figures (PNG data URIs) viewable offline."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:center}"
        "td:first-child{text-align:left}"
        "tr.group td{background:#f2f2f2}b{color:#000}.note{color:#555}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p class='note'>{html.escape(n)}</p>" for n in notes),
    ]
    for table in tables:
        parts.append(f"<h2 id='{table.metric}'>{html.escape(metric_name(table.metric))}</h2>")
        parts.append(f"<p class='note'>{html.escape(_scale_note(table))}</p><table>")
        parts.append(
            "<tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in ["Category", *table.variants])
            + "</tr>"
        )
        for row in table.rows:
            cells = [
                html.escape(_plain_cell(row.values[v], table, v, ("\x00", "\x01")))
                for v in table.variants
            ]
            cells = [c.replace("\x00", "<b>").replace("\x01", "</b>") for c in cells]
            parts.append(
                f"<tr class='{'group' if row.group else ''}'><td>{html.escape(row.label)}</td>"
                + "".join(f"<td>{c}</td>" for c in cells)
                + "</tr>"
            )
        parts.append(
            "</table><table><tr><th>Variant</th><th>Categories</th><th>Mean change</th><th>p-value "
            f"(Wilcoxon vs {html.escape(table.reference)})</th></tr>"
        )
        parts += [
            "<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in line) + "</tr>"
            for line in _test_lines(table)
        ]
        parts.append("</table>")
        parts += [
            f"<img alt='{html.escape(table.metric)} figure' src='{src}'>" for src in _figures(table)
        ]
    parts.append(
        "<h2>Missing cells</h2><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in missing_lines(missing))
        + "</ul>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
