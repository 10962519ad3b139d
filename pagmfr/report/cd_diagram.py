"""A critical-difference diagram of a :class:`~pagmfr.report.ranks.Ranking`, drawn with
matplotlib (imported only here, when a diagram is drawn, without pyplot or a display): an axis
of average ranks (1, the best, on the left), each variant's name at its rank, the better half
on the left, the other on the right, and a thick bar over each clique of variants the tests
do not tell apart. SVG for the HTML page and Markdown, PDF for LaTeX; byte-reproducible (no
date, fixed ids) and, in SVG, with text kept as text.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from pagmfr.report.escape import plot_label
from pagmfr.report.ranks import Ranking

#: Height of one label row, in inches; the figure's width, in inches.
ROW_INCHES, WIDTH_INCHES = 0.3, 5.0
#: Where the rows start under the axis, and the gap between clique bars (in label rows).
BAR_TOP, BAR_GAP = 0.5, 0.35
#: What each format's metadata must leave out for the same diagram to give the same bytes.
NO_DATE = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}


@dataclass
class Diagram:
    """A metric's diagram as the report writes it: its ranking, its files' name without the
    extension (``au_pro-cd``), and the SVG (empty when not drawn)."""

    ranking: Ranking
    stem: str
    svg: bytes = b""


def _figure(ranking: Ranking):
    from matplotlib.figure import Figure

    variants, ranks = ranking.variants, ranking.average_ranks
    count = len(variants)
    half = math.ceil(count / 2)
    # Lines never cross: the left half deeper as ranks grow, the right half as they shrink.
    sides = ((variants[:half], 1.0, "right"), (variants[half:][::-1], float(count), "left"))
    first_row = BAR_TOP + BAR_GAP * len(ranking.cliques) + 0.4
    bottom = first_row + half - 1
    figure = Figure(figsize=(WIDTH_INCHES, ROW_INCHES * (bottom + 1.6)))
    axes = figure.add_axes((0.3, 0.0, 0.4, 1.0))
    axes.set_xlim(1, count)
    axes.set_ylim(bottom + 0.5, -1.1)
    axes.axis("off")
    line = {"color": "black", "clip_on": False}
    axes.plot([1, count], [0, 0], linewidth=1, **line)
    for tick in range(1, count + 1):
        axes.plot([tick, tick], [0, -0.25], linewidth=1, **line)
        axes.text(tick, -0.35, str(tick), ha="center", va="bottom", fontsize=9)
        if tick < count:
            axes.plot([tick + 0.5, tick + 0.5], [0, -0.12], linewidth=0.7, **line)
    margin = 0.08 * (count - 1)
    for names, edge, align in sides:
        end = edge - margin if align == "right" else edge + margin
        for row, name in enumerate(names):
            y = first_row + row
            axes.plot([ranks[name], ranks[name], end], [0, y, y], linewidth=0.8, **line)
            label = f"{plot_label(name)} ({ranks[name]:.2f})"
            pad = -0.02 * (count - 1) if align == "right" else 0.02 * (count - 1)
            axes.text(end + pad, y, label, ha=align, va="center", fontsize=9)
    for index, clique in enumerate(ranking.cliques):
        low, high = min(ranks[v] for v in clique), max(ranks[v] for v in clique)
        y = BAR_TOP + BAR_GAP * index
        axes.plot([low - 0.03, high + 0.03], [y, y], linewidth=4, solid_capstyle="round", **line)
    return figure


def render(ranking: Ranking, fmt: str) -> bytes:
    """The diagram of a ranking that has one (no ``shortfall``) as ``fmt`` ("svg", "pdf")."""
    from matplotlib import rc_context

    buffer = io.BytesIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "pagmfr"}):
        _figure(ranking).savefig(buffer, format=fmt, bbox_inches="tight", metadata=NO_DATE[fmt])
    return buffer.getvalue()
