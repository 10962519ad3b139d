"""Study cells: (method, variant, category, seed) with a stable key.

The key hashes everything that changes a cell's result (the full config and a fingerprint of
the category's data) and nothing that does not (where the data lives, loader workers, device),
so re-running a study recognises finished cells even from another machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pagmfr.categories import category_kind
from pagmfr.config import Config
from pagmfr.data.dataset import MVTecAD
from pagmfr.data.pipeline import resolve_data_root

NOT_IN_KEY = ("data.root", "data.num_workers", "train.device")


@dataclass(frozen=True)
class Cell:
    """One (variant, category, seed) of a study with its full config and stable key."""

    variant: str
    category: str
    seed: int
    config: Config = field(compare=False, hash=False)
    key: str = ""
    fingerprint: str = ""
    kind: str = ""

    @property
    def method(self) -> str:
        """The cell's method name."""
        return self.config.method

    @property
    def name(self) -> str:
        """The cell's human-readable name."""
        return cell_name(self.variant, self.category, self.seed)

    def spec(self) -> dict[str, Any]:
        """What a trial receives: plain data, so it travels to any worker."""
        return {
            "key": self.key,
            "variant": self.variant,
            "category": self.category,
            "seed": self.seed,
            "kind": self.kind,
            "method": self.method,
            "fingerprint": self.fingerprint,
            "config": self.config.to_flat(),
        }


def cell_name(variant: str, category: str, seed: int) -> str:
    """How a cell is named to people: summaries, MLflow run names, trial names."""
    return f"{variant}/{category}/seed{seed}"


@cache
def data_fingerprint(root: str, category: str) -> str:
    """Train and test files of one category; a readable marker when the data is broken (the
    trial then fails with the real error and is recorded as failed)."""
    try:
        resolved = resolve_data_root(root)
        train = MVTecAD(resolved, category, "train", 32).fingerprint()
        test = MVTecAD(resolved, category, "test", 32).fingerprint()
    except (ValueError, OSError) as err:
        return "unreadable-" + hashlib.sha256(str(err).encode()).hexdigest()[:12]
    return hashlib.sha256(f"{train}:{test}".encode()).hexdigest()[:32]


def cell_key(config: Config, fingerprint: str) -> str:
    """A hash of everything that changes a cell's result: config (less where it runs) and data."""
    flat = {k: v for k, v in config.to_flat().items() if k not in NOT_IN_KEY}
    payload = json.dumps({"config": flat, "data": fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def kind_of(config: Config) -> str:
    """The category's kind as training will see it (the report groups rows by it)."""
    try:
        root = resolve_data_root(str(config.data.root))
    except OSError:
        root = None
    return config.data.kind or category_kind(config.data.category, root=root)


def make_cell(variant: str, category: str, seed: int, config: Config) -> Cell:
    """The cell of ``config`` for one category and seed."""
    config = config.with_overrides({"data.category": category, "train.seed": seed})
    fingerprint = data_fingerprint(str(config.data.root), category)
    return Cell(
        variant, category, seed, config, cell_key(config, fingerprint), fingerprint, kind_of(config)
    )


def ablation_cells(
    base: Config,
    variants: Mapping[str, Mapping[str, Any]],
    categories: Iterable[str],
    seeds: Iterable[int],
) -> list[Cell]:
    """Every variant x category x seed; a variant is a dict of dotted overrides of ``base``."""
    cells = []
    for variant, overrides in variants.items():
        try:
            config = base.with_overrides(dict(overrides))
        except ValueError as err:
            raise ValueError(f"variant {variant!r}: {err}") from err
        cells += [
            make_cell(variant, category, seed, config) for category in categories for seed in seeds
        ]
    keys = [c.key for c in cells]
    duplicates = {c.name for c in cells if keys.count(c.key) > 1}
    if duplicates:
        raise ValueError(
            f"variants give identical cells (same config): {', '.join(sorted(duplicates))}"
        )
    return cells


def cell_dir(cells_path: str | Path, study: str, key: str) -> Path:
    """A cell's working folder, stable across runs of the study: a restarted driver's trial
    resumes from the ``last.pt`` it finds there."""
    return Path(cells_path) / study / "cells" / key


@dataclass
class SearchPlan:
    """Turns an HPO trial's sampled overrides into a cell (one cell per trial)."""

    base: Config
    category: str
    seed: int

    def config_for(self, params: Mapping[str, Any]) -> Config:
        """The base config with a trial's sampled overrides, for the search's category and seed."""
        overrides = {k: v for k, v in params.items() if "." in k or k == "method"}
        return self.base.with_overrides(
            {**overrides, "data.category": self.category, "train.seed": self.seed}
        )

    def spec_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The cell spec of a trial's sampled overrides (its variant name is ``hpo-<key>``)."""
        config = self.config_for(params)
        fingerprint = data_fingerprint(str(config.data.root), self.category)
        key = cell_key(config, fingerprint)
        variant = "hpo-" + key[:8]
        return Cell(
            variant, self.category, self.seed, config, key, fingerprint, kind_of(config)
        ).spec()
