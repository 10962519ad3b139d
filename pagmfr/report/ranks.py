"""Which variants differ, over every block at once: the statistics a critical-difference
diagram draws (Demšar, JMLR 2006), with pairwise tests as Benavoli et al. (JMLR 2016) advise.

A block is one (category, seed): within it each variant gets its rank on the metric (1: the
highest value; ties share their mean rank), and a variant's average rank is its mean over the
blocks where every ranked variant has a value. A variant is ranked where it has a value in at
least half of the blocks: one partly run (a failed cell, a transfer evaluation on one category)
is left out, named, rather than leaving the diagram without blocks. Seeds of one category are
blocks of their own, as the issue that asked for the diagram defines them, though they share
their data: the tables' Wilcoxon marks pair over categories by default (``--test-over``).
Friedman's test asks whether any variant differs; only
when it says so (p < alpha) are pairs told apart, by Wilcoxon signed-rank tests over the
blocks with Holm's correction. Friedman's test needs three variants: with two, the Wilcoxon
test alone decides. A clique is a longest run of variants, in rank order, of which no pair
differs: the diagram joins it with a bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import friedmanchisquare, rankdata

from pagmfr.report.tables import holm_adjusted, signed_rank, smallest_p

DEFAULT_ALPHA = 0.05
#: What a diagram needs: variants to rank, and blocks for the tests to say anything.
MIN_VARIANTS, MIN_BLOCKS = 2, 5
#: The fewest variants Friedman's test takes (scipy refuses two).
FRIEDMAN_VARIANTS = 3


def check_alpha(alpha: float) -> float:
    """``alpha`` when it is a significance level (strictly between 0 and 1), else a clear
    error: 0 or 1 would make every test, or none, significant."""
    if not 0 < alpha < 1:  # NaN fails too
        raise ValueError(
            f"alpha must be between 0 and 1 (exclusive), got {alpha}: the significance level "
            "of the critical-difference tests (--alpha, default 0.05)"
        )
    return alpha


@dataclass
class Pair:
    """Two variants' Wilcoxon signed-rank test over the blocks, Holm-corrected over every
    pair; ``first`` has the better average rank."""

    first: str
    second: str
    p_value: float
    p_holm: float
    #: p_holm < alpha, once Friedman's test (with three or more variants) found a difference.
    significant: bool


@dataclass
class Ranking:
    """One metric's average ranks, tests and cliques; ``shortfall`` says why there is no
    diagram (too few variants or blocks), "" when there is one."""

    metric: str
    alpha: float
    #: The ranked variants, best average rank first (ties in the given order).
    variants: list[str] = field(default_factory=list)
    average_ranks: dict[str, float] = field(default_factory=dict)
    #: Blocks where every ranked variant has a value, of all the blocks with any value.
    blocks: int = 0
    all_blocks: int = 0
    #: Friedman's chi-square and p (NaN: not run, with two variants or all blocks tied).
    friedman_statistic: float = math.nan
    friedman_p: float = math.nan
    pairs: list[Pair] = field(default_factory=list)
    cliques: list[list[str]] = field(default_factory=list)
    #: Variants not ranked, with the blocks where they have a value (fewer than half).
    left_out: dict[str, int] = field(default_factory=dict)
    shortfall: str = ""

    @property
    def friedman_ran(self) -> bool:
        """Whether Friedman's test gave a p-value."""
        return not math.isnan(self.friedman_p)

    @property
    def smallest_holm_p(self) -> float:
        """The smallest Holm-corrected p any pair could reach over these blocks: at or above
        alpha, no pair can differ, whatever the values."""
        return smallest_p(self.blocks) * len(self.pairs)


def _cliques(order: list[str], different: set[frozenset[str]]) -> list[list[str]]:
    """Every longest run of consecutive variants in ``order`` with no pair in ``different``,
    of two variants or more."""
    spans: list[tuple[int, int]] = []
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and not any(
            frozenset((order[m], order[end + 1])) in different for m in range(start, end + 1)
        ):
            end += 1
        if end > start and not any(s <= start and end <= e for s, e in spans):
            spans.append((start, end))
    return [order[s : e + 1] for s, e in spans]


def rank_variants(
    runs: pd.DataFrame, metric: str, variants: list[str], alpha: float = DEFAULT_ALPHA
) -> Ranking:
    """The ranking of ``variants`` on ``metric`` over the (category, seed) blocks of ``runs``
    (one finished run per cell), or why there is none."""
    check_alpha(alpha)
    values = runs.dropna(subset=[metric]).pivot(
        index=["category", "seed"], columns="variant", values=metric
    )
    counts = {v: int(values[v].notna().sum()) if v in values.columns else 0 for v in variants}
    present = [v for v in variants if counts[v] and 2 * counts[v] >= len(values)]
    complete = values[present].dropna()
    ranking = Ranking(
        metric,
        alpha,
        blocks=len(complete),
        all_blocks=len(values),
        left_out={v: n for v, n in counts.items() if v not in present},
    )
    if len(present) < MIN_VARIANTS or len(complete) < MIN_BLOCKS:
        ranking.shortfall = (
            f"no critical-difference diagram of {metric}: {len(present)} variant(s) with values "
            f"and {len(complete)} block(s) (category x seed) where every one has a value; it "
            f"needs {MIN_VARIANTS} variants and {MIN_BLOCKS} blocks"
        )
        return ranking
    matrix = complete.to_numpy(dtype=float)
    average = rankdata(-matrix, axis=1).mean(axis=0)  # rank 1: the highest value
    ranking.average_ranks = {v: float(r) for v, r in zip(present, average, strict=True)}
    ranking.variants = sorted(present, key=ranking.average_ranks.__getitem__)
    tied = all(np.all(row == row[0]) for row in matrix)
    if len(present) >= FRIEDMAN_VARIANTS and not tied:
        result = friedmanchisquare(*matrix.T)
        ranking.friedman_statistic = float(result.statistic)
        ranking.friedman_p = float(result.pvalue)
    # With two variants, the Wilcoxon test is the only one; with more, Friedman's must agree.
    separable = len(present) < FRIEDMAN_VARIANTS or ranking.friedman_p < alpha
    order = ranking.variants
    tested = [
        (a, b, signed_rank(complete[a].to_numpy(), complete[b].to_numpy())[1])
        for a, b in combinations(order, 2)
    ]
    adjusted = holm_adjusted([p for _, _, p in tested])
    ranking.pairs = [
        Pair(a, b, p, holm, bool(separable and holm < alpha))
        for (a, b, p), holm in zip(tested, adjusted, strict=True)
    ]
    different = {frozenset((p.first, p.second)) for p in ranking.pairs if p.significant}
    ranking.cliques = _cliques(order, different)
    return ranking
