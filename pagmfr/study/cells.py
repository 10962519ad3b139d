"""Study cells: (method, variant, category, seed) with a stable key.

The key hashes everything that changes a cell's result (the full config, a fingerprint of the
category's data and of the code that trains it) and nothing that does not (where the data
lives, loader workers, device), so re-running a study recognises finished cells even from
another machine, and retrains them after a code change. The ``config_key`` leaves the code out:
it finds a cell's runs under older code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pagmfr.categories import category_kind
from pagmfr.config import Config
from pagmfr.data.dataset import MVTecAD
from pagmfr.data.pipeline import resolve_data_root
from pagmfr.logs import log
from pagmfr.models.registry import method_spec
from pagmfr.provenance import code_fingerprint

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
    #: The key without the code: the same cell under any code version.
    config_key: str = ""
    #: The fingerprint of the code that trains the cell (:func:`method_code_fingerprint`).
    code: str = ""
    #: What the cell's variant changes, as people read it ("fusion.mode=none").
    overrides: str = ""

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
            "config_key": self.config_key,
            "code": self.code,
            "overrides": self.overrides,
            "config": self.config.to_flat(),
        }


def cell_name(variant: str, category: str, seed: int) -> str:
    """How a cell is named to people: summaries, MLflow run names, trial names."""
    return f"{variant} / {category} / seed {seed}"


def describe_overrides(overrides: Mapping[str, Any]) -> str:
    """A variant's overrides as one line (``fusion.mode=none, loss.focal=5.0``): what the
    variant changes, readable in MLflow's runs table."""
    if not overrides:
        return "(base config)"
    return ", ".join(f"{key}={value}" for key, value in overrides.items())


@cache
def method_code_fingerprint(method: str) -> str:
    """The code a method's cells depend on: pagmfr's source, plus, for a method registered
    outside pagmfr, the whole source file that defines it (a user's method lives in their
    script or module, which pagmfr's fingerprint does not see)."""
    spec = method_spec(method)
    if spec.builtin:
        return code_fingerprint()
    try:
        source = Path(inspect.getsourcefile(spec.factory) or "").read_bytes()
    except (TypeError, OSError):
        log(
            f"warning: the source of method {method!r} cannot be read (defined interactively?): "
            "its cells are keyed by pagmfr's code only, so a change to it is not detected"
        )
        source = b""
    return hashlib.sha256(code_fingerprint().encode() + b"\0" + source).hexdigest()[:16]


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


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :20
    ]


def _keyed_config(config: Config) -> dict[str, Any]:
    return {k: v for k, v in config.to_flat().items() if k not in NOT_IN_KEY}


def config_key(config: Config, fingerprint: str) -> str:
    """A hash of the config (less where it runs) and the data: the cell under any code."""
    return _hash({"config": _keyed_config(config), "data": fingerprint})


def cell_key(config: Config, fingerprint: str, code: str) -> str:
    """A hash of everything that changes a cell's result: config, data and code."""
    return _hash({"config": _keyed_config(config), "data": fingerprint, "code": code})


def kind_of(config: Config) -> str:
    """The category's kind as training will see it (the report groups rows by it)."""
    try:
        root = resolve_data_root(str(config.data.root))
    except OSError:
        root = None
    return config.data.kind or category_kind(config.data.category, root=root)


def make_cell(variant: str, category: str, seed: int, config: Config, overrides: str = "") -> Cell:
    """The cell of ``config`` for one category and seed."""
    config = config.with_overrides({"data.category": category, "train.seed": seed})
    fingerprint = data_fingerprint(str(config.data.root), category)
    code = method_code_fingerprint(config.method)
    return Cell(
        variant,
        category,
        seed,
        config,
        key=cell_key(config, fingerprint, code),
        fingerprint=fingerprint,
        kind=kind_of(config),
        config_key=config_key(config, fingerprint),
        code=code,
        overrides=overrides,
    )


def ablation_cells(
    base: Config,
    variants: Mapping[str, Mapping[str, Any]],
    categories: Iterable[str],
    seeds: Iterable[int],
) -> list[Cell]:
    """Every variant x category x seed; a variant is a dict of dotted overrides of ``base``.
    Variants that come out as the same config (the base already sets what one of them
    changes) are refused: their cells would be one cell under two names."""
    configs = {}
    for variant, overrides in variants.items():
        try:
            configs[variant] = base.with_overrides(dict(overrides))
        except ValueError as err:
            raise ValueError(f"variant {variant!r}: {err}") from err
    _refuse_identical_variants(base, variants, configs)
    return [
        make_cell(variant, category, seed, config, describe_overrides(variants[variant]))
        for variant, config in configs.items()
        for category in categories
        for seed in seeds
    ]


def _refuse_identical_variants(
    base: Config, variants: Mapping[str, Mapping[str, Any]], configs: Mapping[str, Config]
) -> None:
    groups: dict[str, list[str]] = {}
    for variant, config in configs.items():
        groups.setdefault(_hash(_keyed_config(config)), []).append(variant)
    same = next((group for group in groups.values() if len(group) > 1), None)
    if same is None:
        return
    base_flat = base.to_flat()
    no_ops = [
        f"{key}={base_flat[key]}"
        for variant in same
        for key in variants[variant]
        if configs[variant].to_flat()[key] == base_flat[key]
    ]
    named = " and ".join(
        f"{v!r} ({describe_overrides(variants[v]) if variants[v] else 'no overrides'})"
        for v in same
    )
    cause = (
        f"the base config already sets {', '.join(dict.fromkeys(no_ops))} (from --base-config "
        "or --set?)"
        if no_ops
        else "their overrides end in the same values"
    )
    raise ValueError(
        f"variants {named} give the same config, so their cells would be identical: {cause}. "
        "Change the base config or drop one of these variants."
    )


def cell_dir(cells_path: str | Path, study: str, key: str) -> Path:
    """A cell's working folder, stable across runs of the study: a restarted driver's trial
    resumes from the ``last.pt`` it finds there."""
    return Path(cells_path) / study / "cells" / key


@dataclass
class SearchPlan:
    """Turns an HPO trial's sampled overrides into one cell per category of the search: a trial
    trains its config on every category (in lockstep, epoch by epoch) and its objective is the
    mean over them, so the chosen config is not fitted to one category."""

    base: Config
    categories: Sequence[str]
    seed: int

    def config_for(self, params: Mapping[str, Any], category: str | None = None) -> Config:
        """The base config with a trial's sampled overrides, for one of the search's
        categories (default: the first) and its seed."""
        return self.base.with_overrides(
            {
                **self.overrides(params),
                "data.category": category or self.categories[0],
                "train.seed": self.seed,
            }
        )

    @staticmethod
    def overrides(params: Mapping[str, Any]) -> dict[str, Any]:
        """The config overrides among a trial's params (the rest is the searcher's own)."""
        return {k: v for k, v in params.items() if "." in k or k == "method"}

    def spec_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trial's spec: its cells (one per category, under ``"cells"``) and, for the MLflow
        run that records the trial, one key over them (its variant name is ``hpo-<key>``)."""
        described = describe_overrides(self.overrides(params))
        cells = [
            make_cell("", category, self.seed, self.config_for(params, category), described)
            for category in self.categories
        ]
        key = _hash({"cells": [cell.key for cell in cells]})
        variant = "hpo-" + key[:8]
        specs = [{**cell.spec(), "variant": variant} for cell in cells]
        return {
            **specs[0],
            "key": key,
            "category": "+".join(self.categories),
            "kind": "+".join(dict.fromkeys(cell.kind for cell in cells)),
            "fingerprint": _hash({"data": [cell.fingerprint for cell in cells]}),
            "config_key": _hash({"cells": [cell.config_key for cell in cells]}),
            "cells": specs,
        }
