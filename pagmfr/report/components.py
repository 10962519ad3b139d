"""The component table most ablation sections print: one row per variant, one column group
per metric (mean over categories ± std over seeds, the change against the reference and its
significance mark), built from the per-metric tables so that every number and mark agrees."""

from __future__ import annotations

from dataclasses import dataclass, field

from pagmfr.report.protocol import Protocol
from pagmfr.report.tables import MetricTable, PairedTest, Value


@dataclass
class ComponentCell:
    """One variant's value of one metric: the metric table's "Mean" row and its test."""

    value: Value | None
    test: PairedTest | None


@dataclass
class ComponentTable:
    """Rows: variants (the reference first); columns: metrics."""

    variants: list[str]
    reference: str
    metrics: list[str]
    cells: dict[tuple[str, str], ComponentCell]  # (variant, metric)
    categories: int
    seeds: list[int]
    scale: float
    decimals: int
    test_over: str
    #: How the runs measured the numbers (see :mod:`pagmfr.report.protocol`).
    protocol: Protocol = field(default_factory=Protocol)

    def cell(self, variant: str, metric: str) -> ComponentCell:
        """The (variant, metric) cell."""
        return self.cells[(variant, metric)]


def component_table(
    tables: list[MetricTable], categories: int, seeds: list[int], protocol: Protocol
) -> ComponentTable:
    """The component table of the per-metric tables (which share variants and reference), with
    the ``protocol`` of the runs behind all of them."""
    first = tables[0]
    cells = {}
    for table in tables:
        overall = table.row("Mean")
        for variant in table.variants:
            value = overall.values.get(variant) if overall is not None else None
            cells[(variant, table.metric)] = ComponentCell(value, table.test(variant))
    return ComponentTable(
        first.variants,
        first.reference,
        [t.metric for t in tables],
        cells,
        categories,
        seeds,
        first.scale,
        first.decimals,
        first.test_over,
        protocol,
    )
