"""Ablation tables: categories (textures, then objects) x variants, mean ± std over seeds, group
means, the best value per row, the change against a reference, and a paired test."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from pagmfr.categories import MVTEC_AD_CATEGORIES, TEXTURE
from pagmfr.report.load import COLUMNS

GROUPS = ("Textures mean", "Objects mean", "Mean")


@dataclass
class Value:
    """One table cell: mean (and sample std) over seeds, its change against the reference."""

    mean: float
    std: float | None  # sample std over seeds; None with one seed
    seeds: int
    delta: float | None = None  # mean minus the reference's, in display units
    best: bool = False


@dataclass
class Row:
    """A category's row, or a group mean's (textures, objects, all)."""

    label: str
    group: bool
    values: dict[str, Value | None]


@dataclass
class PairedTest:
    """A variant against the reference over categories: Wilcoxon signed-rank."""

    variant: str
    categories: int
    mean_delta: float
    statistic: float
    p_value: float


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


@dataclass
class Missing:
    """A grid cell with no finished run, with its state and last error."""

    variant: str
    category: str
    seed: int
    state: str  # FAILED, RUNNING, ... or "not run"
    error: str = ""


def ordered_categories(kept: pd.DataFrame, runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(category, kind), textures first, each group in MVTec AD's order, then by name."""
    kinds = dict(zip(runs["category"], runs["kind"], strict=False))
    order = list(MVTEC_AD_CATEGORIES)
    rank = lambda c: (kinds[c] != TEXTURE, order.index(c) if c in order else len(order), c)  # noqa: E731
    return [(c, kinds[c]) for c in sorted(kinds, key=rank)]


def ordered_variants(runs: pd.DataFrame, reference: str | None) -> tuple[list[str], str]:
    """Variants in the order they were first recorded, the reference ("full model" if any)
    first."""
    variants = list(dict.fromkeys(runs.sort_values("end_time", na_position="last")["variant"]))
    if reference is None:
        reference = "full model" if "full model" in variants else variants[0]
    if reference not in variants:
        raise ValueError(
            f"reference variant {reference!r} not in the study; variants: {', '.join(variants)}"
        )
    return [reference] + [v for v in variants if v != reference], reference


def missing_cells(runs: pd.DataFrame, kept: pd.DataFrame) -> list[Missing]:
    """Every (variant, category, seed) of the grid with no finished run, and its state."""
    done = set(zip(kept["variant"], kept["category"], kept["seed"], strict=True))
    latest = runs.sort_values("end_time", na_position="last").drop_duplicates(
        ["variant", "category", "seed"], keep="last"
    )
    state = {(r.variant, r.category, r.seed): (r.status, r.error) for r in latest.itertuples()}
    result = []
    for variant in runs["variant"].unique():
        for category in runs["category"].unique():
            for seed in sorted(runs["seed"].unique()):
                if (variant, category, seed) in done:
                    continue
                status, error = state.get((variant, category, seed), ("not run", ""))
                error = error if isinstance(error, str) else ""
                result.append(
                    Missing(
                        variant,
                        category,
                        int(seed),
                        status,
                        error.strip().splitlines()[-1] if error else "",
                    )
                )
    return result


def _value(per_seed: pd.Series) -> Value:
    return Value(
        float(per_seed.mean()),
        float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
        len(per_seed),
    )


def build_table(
    metric: str,
    runs: pd.DataFrame,
    kept: pd.DataFrame,
    reference: str | None = None,
    scale: float = 100.0,
    decimals: int = 1,
) -> MetricTable:
    """One metric's table from the kept runs: per-category mean ± std over seeds, group means,
    the best per row, changes against ``reference`` and paired tests."""
    if metric not in kept.columns or kept[metric].isna().all():
        recorded = sorted(
            c for c in kept.columns if c not in COLUMNS and not c.startswith(("params.", "tags."))
        )
        raise ValueError(
            f"no finished run has metric {metric!r}; recorded: {', '.join(recorded) or 'none'}"
        )
    variants, reference = ordered_variants(runs, reference)
    categories = ordered_categories(kept, runs)
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
        )
        for category, _ in categories
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
    tests = [_paired_test(v, reference, rows) for v in variants if v != reference]
    return MetricTable(metric, variants, reference, rows, tests, scale, decimals)


def _paired_test(variant: str, reference: str, rows: list[Row]) -> PairedTest:
    """Wilcoxon signed-rank over categories (per-category means), variant vs reference."""
    pairs = [
        (r.values[variant].mean, r.values[reference].mean)
        for r in rows
        if not r.group and r.values.get(variant) and r.values.get(reference)
    ]
    if not pairs:
        return PairedTest(variant, 0, math.nan, math.nan, math.nan)
    a, b = np.array(pairs).T
    delta = float(np.mean(a - b))
    if len(pairs) < 2 or np.allclose(a, b):
        return PairedTest(variant, len(pairs), delta, math.nan, math.nan)
    result = wilcoxon(a, b)
    return PairedTest(variant, len(pairs), delta, float(result.statistic), float(result.pvalue))
