"""Ablation tables: categories (textures, then objects) x variants, mean ± std over seeds, group
means, the best value per row, the change against a reference, and paired tests with Holm's
correction, whose marks every format prints the same way."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from pagmfr.categories import TEXTURE
from pagmfr.report.load import COLUMNS
from pagmfr.report.protocol import Protocol, protocol_of
from pagmfr.report.select import Selection

GROUPS = ("Textures mean", "Objects mean", "Mean")
#: Significance marks: Holm-corrected p below each level gets the mark.
MARKS = ((0.01, "**"), (0.05, "*"))
#: What the paired tests pair: per-category means, or every (category, seed).
TEST_DESIGNS = ("categories", "category-seed")


@dataclass
class Value:
    """One table cell: mean (and sample std) over seeds, its change against the reference."""

    mean: float
    std: float | None  # sample std over seeds; None with one seed
    seeds: int
    delta: float | None = None  # mean minus the reference's, in display units
    best: bool = False
    mark: str = ""  # the variant's significance mark (on the "Mean" row only)


@dataclass
class Row:
    """A category's row, or a group mean's (textures, objects, all)."""

    label: str
    group: bool
    values: dict[str, Value | None]
    kind: str = ""  # texture | object for a category; "" for a group mean


@dataclass
class PairedTest:
    """A variant against the reference: Wilcoxon signed-rank over paired values, with the
    Holm-corrected p-value over the table's variants."""

    variant: str
    pairs: int
    mean_delta: float
    statistic: float
    p_value: float
    p_holm: float = math.nan
    mark: str = ""


@dataclass
class MetricTable:
    """One metric's ablation table: rows (categories then group means) by variant columns."""

    metric: str
    variants: list[str]
    reference: str
    rows: list[Row]
    tests: list[PairedTest] = field(default_factory=list)
    scale: float = 100.0
    decimals: int = 1
    test_over: str = "categories"
    #: How the table's runs measured its numbers (see :mod:`pagmfr.report.protocol`).
    protocol: Protocol = field(default_factory=Protocol)

    def row(self, label: str) -> Row | None:
        """The row named ``label`` (a category or a group mean), if any."""
        return next((r for r in self.rows if r.label == label), None)

    def test(self, variant: str) -> PairedTest | None:
        """The variant's test against the reference (None for the reference)."""
        return next((t for t in self.tests if t.variant == variant), None)


def _value(per_seed: pd.Series) -> Value:
    return Value(
        float(per_seed.mean()),
        float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
        len(per_seed),
    )


def _check_metric(metric: str, kept: pd.DataFrame) -> None:
    if metric not in kept.columns or kept[metric].isna().all():
        recorded = sorted(
            c
            for c in kept.columns
            if c not in COLUMNS
            and not c.startswith(("params.", "tags."))
            and pd.api.types.is_numeric_dtype(kept[c])
            and c != "seed"
        )
        raise ValueError(
            f"no finished run has metric {metric!r}; recorded: {', '.join(recorded) or 'none'}"
        )


def ordered_variants(variants: list[str], reference: str | None) -> tuple[list[str], str]:
    """The variants with the reference ("full model" if any, else the first) first."""
    if reference is None:
        reference = "full model" if "full model" in variants else variants[0]
    if reference not in variants:
        raise ValueError(
            f"reference variant {reference!r} not in the study; variants: {', '.join(variants)}"
        )
    return [reference] + [v for v in variants if v != reference], reference


def build_table(
    metric: str,
    selection: Selection,
    reference: str | None = None,
    scale: float = 100.0,
    decimals: int = 1,
    test_over: str = "categories",
    left_out: list[str] | None = None,
) -> MetricTable:
    """One metric's table from the selected runs: per-category mean ± std over seeds, group
    means, the best per row, changes against ``reference`` and Holm-corrected paired tests.
    ``left_out``: the runs whose value was not finite (made absent in ``selection``), which the
    protocol line names."""
    if test_over not in TEST_DESIGNS:
        raise ValueError(f"unknown test design {test_over!r}; allowed: {', '.join(TEST_DESIGNS)}")
    kept = selection.kept
    _check_metric(metric, kept)
    variants, reference = ordered_variants(selection.variants, reference)
    categories = selection.categories
    values = kept.dropna(subset=[metric]).assign(value=lambda d: d[metric] * scale)
    by_cell = {
        key: group.set_index("seed")["value"]
        for key, group in values.groupby(["variant", "category"])
    }

    rows = [
        Row(
            category,
            False,
            {
                v: _value(by_cell[(v, category)]) if (v, category) in by_cell else None
                for v in variants
            },
            kind,
        )
        for category, kind in categories
    ]
    members = {
        "Textures mean": [c for c, k in categories if k == TEXTURE],
        "Objects mean": [c for c, k in categories if k != TEXTURE],
        "Mean": [c for c, _ in categories],
    }
    for label, group in members.items():
        if not group or (label != "Mean" and len(group) == len(categories)):
            continue  # a group that is empty, or the same as "Mean"
        cells = {}
        for v in variants:
            series = [by_cell.get((v, c)) for c in group]
            if any(s is None for s in series):
                cells[v] = None  # a mean over part of the group would mislead: shown as "–"
                continue
            per_seed = pd.concat(series, axis=1).dropna().mean(axis=1)  # seeds present everywhere
            cells[v] = Value(
                float(np.mean([s.mean() for s in series])),
                float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
                len(per_seed),
            )
        rows.append(Row(label, True, cells))

    for row in rows:
        present = {v: x for v, x in row.values.items() if x is not None}
        if not present:
            continue
        top = max(round(x.mean, decimals) for x in present.values())
        base = row.values.get(reference)
        for v, x in present.items():
            x.best = round(x.mean, decimals) == top  # ties at the shown precision are all bold
            if base is not None and v != reference:
                x.delta = x.mean - base.mean
    pairs = {v: _pairs(v, reference, rows, by_cell, test_over) for v in variants if v != reference}
    tests = holm([_paired_test(v, a, b) for v, (a, b) in pairs.items()])
    overall = next((r for r in rows if r.label == "Mean"), None)
    for test in tests:
        if overall is not None and overall.values.get(test.variant) is not None:
            overall.values[test.variant].mark = test.mark
    protocol = protocol_of(values, [metric], left_out or ())
    return MetricTable(
        metric, variants, reference, rows, tests, scale, decimals, test_over, protocol
    )


def _pairs(
    variant: str, reference: str, rows: list[Row], by_cell: dict, test_over: str
) -> tuple[np.ndarray, np.ndarray]:
    """The paired values of a variant and the reference: per-category means, or the values
    of every (category, seed) both have."""
    if test_over == "categories":
        pairs = [
            (r.values[variant].mean, r.values[reference].mean)
            for r in rows
            if not r.group and r.values.get(variant) and r.values.get(reference)
        ]
    else:
        pairs = []
        for r in rows:
            mine, theirs = by_cell.get((variant, r.label)), by_cell.get((reference, r.label))
            if r.group or mine is None or theirs is None:
                continue
            both = pd.concat([mine, theirs], axis=1, join="inner")
            pairs += [tuple(x) for x in both.to_numpy()]
    if not pairs:
        return np.array([]), np.array([])
    a, b = np.array(pairs, dtype=float).T
    return a, b


def signed_rank(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Wilcoxon signed-rank statistic and two-sided p of paired values: NaN (no test) under
    two pairs or when every pair is equal."""
    if len(a) < 2 or np.allclose(a, b):
        return math.nan, math.nan
    result = wilcoxon(a, b)
    return float(result.statistic), float(result.pvalue)


def _paired_test(variant: str, a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Wilcoxon signed-rank, variant vs reference (see :func:`signed_rank`)."""
    if not len(a):
        return PairedTest(variant, 0, math.nan, math.nan, math.nan)
    return PairedTest(variant, len(a), float(np.mean(a - b)), *signed_rank(a, b))


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values over the tests that ran: a NaN p (no test) stays NaN
    and is not counted in the family."""
    ran = sorted((i for i, p in enumerate(p_values) if not math.isnan(p)), key=p_values.__getitem__)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(ran):
        running = max(running, min(1.0, (len(ran) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def holm(tests: list[PairedTest]) -> list[PairedTest]:
    """Holm's correction over the tests that ran (the family: every variant against the
    reference in one table), and each test's significance mark."""
    for test, adjusted in zip(tests, holm_adjusted([t.p_value for t in tests]), strict=True):
        if not math.isnan(adjusted):
            test.p_holm = adjusted
            test.mark = next((mark for level, mark in MARKS if adjusted < level), "")
    return tests


def smallest_p(pairs: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test can give with
    ``pairs`` pairs: with 4 categories it is 0.125, so no difference can be significant."""
    return 2.0 ** (1 - pairs) if pairs else math.nan
