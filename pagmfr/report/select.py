"""Which run stands for which cell of the study: one finished run per cell, the cells with none,
and one code version per table unless the caller asks to mix them.

With the grid a study declared (its variants in order, categories, seeds and each cell's key),
every cell that should exist is known, never-started ones included, and a cell's run is found
by its key: a run of another config or code under the same study name is never mixed in. A
study without a grid (recorded before grids, or stand-alone folders) has its cells inferred
from the runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pagmfr.categories import MVTEC_AD_CATEGORIES, TEXTURE

#: The columns a cell is named by.
CELL = ["variant", "category", "seed"]


@dataclass
class Missing:
    """A grid cell with no finished run, with its state and last error."""

    variant: str
    category: str
    seed: int
    state: str  # FAILED, RUNNING, ..., "not run", or "not run with this code"
    error: str = ""


@dataclass
class Selection:
    """The runs a report uses: one finished run per cell (``kept``), in the declared order."""

    kept: pd.DataFrame
    variants: list[str]
    categories: list[tuple[str, str]]  # (category, kind), textures first
    seeds: list[int]
    missing: list[Missing] = field(default_factory=list)
    #: Finished runs of a kept run's cell that were not kept (an older copy of the same cell).
    duplicates_dropped: int = 0
    #: Finished runs of a cell under another key than the kept run's (another config or code
    #: under the same variant name, in a study recorded without a grid).
    other_runs: int = 0
    #: Code versions of the kept runs, with how many runs each.
    code_versions: dict[str, int] = field(default_factory=dict)
    #: Methods whose kept runs were trained by different code (their code fingerprints).
    mixed_methods: list[str] = field(default_factory=list)
    #: Whether the cells came from the grid the study declared.
    declared: bool = False


def text_column(runs: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` as text, "" where a run has no value or no run has the column."""
    if name in runs:
        return runs[name].fillna("").astype(str)
    return pd.Series("", index=runs.index, dtype=object)


def _last_line(error: Any) -> str:
    return error.strip().splitlines()[-1] if isinstance(error, str) and error.strip() else ""


def _version_of(runs: pd.DataFrame) -> pd.Series:
    """A run's code identity: its code fingerprint, else (older records) its code version."""
    fingerprint = text_column(runs, "code_fingerprint")
    return fingerprint.where(fingerprint != "", text_column(runs, "code_version"))


def _matches_version(runs: pd.DataFrame, version: str) -> pd.Series:
    return (text_column(runs, "code_version") == version) | (
        text_column(runs, "code_fingerprint") == version
    )


def _ordered_categories(kinds: Mapping[str, str], declared: list[str]) -> list[tuple[str, str]]:
    """Textures first, each group in MVTec AD's order, then in the declared order."""
    order = list(MVTEC_AD_CATEGORIES)

    def rank(category: str) -> tuple:
        known = order.index(category) if category in order else len(order)
        return kinds[category] != TEXTURE, known, declared.index(category)

    return [(c, kinds[c]) for c in sorted(declared, key=rank)]


def _cells_from_grid(grid: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(grid["cells"], columns=[*CELL, "key", "config_key"]).astype({"seed": int})


def _cells_from_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Every variant x category x seed seen in the runs (a study recorded without a grid)."""
    variants = list(dict.fromkeys(runs.sort_values("end_time", na_position="last")["variant"]))
    grid = pd.MultiIndex.from_product(
        [variants, runs["category"].unique(), sorted(runs["seed"].unique())], names=CELL
    )
    return grid.to_frame(index=False)


def select_runs(
    runs: pd.DataFrame,
    grid: Mapping[str, Any] | None = None,
    code_version: str | None = None,
    mix_code_versions: bool = False,
) -> Selection:
    """One finished run per cell: the latest finished run with the cell's key (with a grid)
    or of the cell's variant, category and seed (without), from ``code_version`` only when it
    is given (a cell is then found by its config, whatever code its key pins).

    Raises ``ValueError`` naming the versions when the kept runs come from several code
    versions, unless ``mix_code_versions``.
    """
    runs = runs.assign(version=_version_of(runs), cell_key=text_column(runs, "cell_key"))
    cells = _cells_from_grid(grid) if grid else _cells_from_runs(runs)
    if grid and code_version is None:
        match = ["cell_key"]
        cells = cells.rename(columns={"key": "cell_key"})
    elif grid:
        match = ["config_key"]
        runs = runs.assign(config_key=text_column(runs, "config_key"))
    else:
        match = CELL
    candidates = runs if code_version is None else runs[_matches_version(runs, code_version)]
    finished = candidates[candidates["status"] == "FINISHED"].sort_values("end_time")
    paired = cells[list(dict.fromkeys([*CELL, *match]))].merge(
        finished.drop(columns=CELL if grid else []), on=match, how="inner"
    )
    kept = paired.drop_duplicates(CELL, keep="last")
    # The same cell (same key) finished more than once: an older copy, e.g. a restored trial's.
    dropped = int(paired.duplicated([*CELL, "cell_key"], keep="last").sum())

    kinds = _kinds(runs, grid)
    categories = (
        [c["name"] for c in grid["categories"]] if grid else list(runs["category"].unique())
    )
    variants = (
        [v["name"] for v in grid["variants"]] if grid else list(dict.fromkeys(cells["variant"]))
    )
    selection = Selection(
        kept,
        variants,
        _ordered_categories(kinds, categories),
        [int(s) for s in (grid["seeds"] if grid else sorted(runs["seed"].unique()))],
        missing=_missing(cells, kept, runs, match),
        duplicates_dropped=dropped,
        other_runs=len(paired) - len(kept) - dropped,
        code_versions=_versions(kept),
        mixed_methods=_mixed_methods(kept),
        declared=bool(grid),
    )
    if selection.mixed_methods and not mix_code_versions:
        listed = ", ".join(f"{v} ({n} runs)" for v, n in selection.code_versions.items())
        raise ValueError(
            f"the runs of {', '.join(selection.mixed_methods)} to report were trained by "
            f"different code ({listed}). Re-run the study to retrain the cells of the older "
            "code, report one version with --code-version VERSION, or mix them knowingly with "
            "--mix-code-versions"
        )
    return selection


def without_non_finite(
    selection: Selection, metrics: list[str]
) -> tuple[Selection, dict[str, list[str]]]:
    """The selection with every NaN or infinite value of ``metrics`` made absent, and, per
    metric, the kept runs whose value was left out (named ``variant / category / seed N
    (value)``): a diverged or broken run is reported by name, never averaged, ranked or
    bolded (an infinite mean once showed as the best)."""
    kept = selection.kept.copy()
    left_out = {}
    for metric in metrics:
        if metric not in kept:
            continue
        values = pd.to_numeric(kept[metric], errors="coerce").astype(float)
        bad = kept[~np.isfinite(values)]
        left_out[metric] = [
            f"{r.variant} / {r.category} / seed {r.seed}: {values[i]:g}" for i, r in bad.iterrows()
        ]
        kept[metric] = values.where(np.isfinite(values))
    return replace(selection, kept=kept), left_out


def _mixed_methods(kept: pd.DataFrame) -> list[str]:
    """Methods with kept runs of more than one training code: each method's cells are keyed
    by its own code, so different methods differ by design, one method's runs must not."""
    methods = text_column(kept, "method")
    per_method = kept["version"].groupby(methods).nunique()
    return sorted(per_method[per_method > 1].index)


def _kinds(runs: pd.DataFrame, grid: Mapping[str, Any] | None) -> dict[str, str]:
    kinds = dict(zip(runs["category"], runs["kind"], strict=False))
    if grid:
        kinds.update({c["name"]: c["kind"] for c in grid["categories"]})
    return kinds


def _versions(kept: pd.DataFrame) -> dict[str, int]:
    """The kept runs' code versions as people read them (the recorded version, else the code
    fingerprint), with how many runs each."""
    readable = text_column(kept, "code_version").where(
        text_column(kept, "code_version") != "", kept["version"]
    )
    counts = readable.replace("", "not recorded").value_counts()
    return {str(v): int(n) for v, n in counts.items()}


def _missing(
    cells: pd.DataFrame, kept: pd.DataFrame, runs: pd.DataFrame, match: list[str]
) -> list[Missing]:
    """Every cell without a kept run, with its latest run's state and last error, or why it
    has none (never run, or finished only with other code)."""
    done = set(map(tuple, kept[CELL].itertuples(index=False)))
    latest = runs.sort_values("end_time", na_position="last")
    own = latest.drop_duplicates(match, keep="last").set_index(match)
    other_code = {}
    if "config_key" in runs and "config_key" in cells:
        finished = latest[latest["status"] == "FINISHED"]
        other_code = dict(
            zip(finished["config_key"], text_column(finished, "code_version"), strict=False)
        )
    result = []
    for cell in cells.itertuples(index=False):
        if (cell.variant, cell.category, cell.seed) in done:
            continue
        index = tuple(getattr(cell, c) for c in match)
        index = index[0] if len(index) == 1 else index
        if index in own.index:
            run = own.loc[index]
            result.append(
                Missing(
                    cell.variant,
                    cell.category,
                    int(cell.seed),
                    run["status"],
                    _last_line(run["error"]),
                )
            )
        elif getattr(cell, "config_key", None) in other_code:
            version = other_code[cell.config_key]
            result.append(
                Missing(
                    cell.variant,
                    cell.category,
                    int(cell.seed),
                    "not run with this code",
                    f"finished with code {version}; re-run the study to retrain it",
                )
            )
        else:
            result.append(Missing(cell.variant, cell.category, int(cell.seed), "not run"))
    return result
