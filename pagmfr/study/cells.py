"""Study cells: (method, variant, category, seed) with a stable key.

The key hashes everything that changes a cell's result (the shared config and the method's own
settings, a fingerprint of the category's data and of the code that trains it) and nothing that
does not (where the data lives, loader workers, device; another method's settings or code; the
report, the CLI), so re-running a study recognises finished cells even from another machine, and
retrains them after a change to their own code. The ``config_key`` leaves the code out:
it finds a cell's runs under older code.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from pagmfr.backbones import require_backbone_weights
from pagmfr.categories import category_kind
from pagmfr.code_scope import method_code_fingerprint
from pagmfr.config import Config
from pagmfr.data.dataset import MVTecAD
from pagmfr.data.layout import validation_split
from pagmfr.data.pipeline import resolve_data_root
from pagmfr.logs import log
from pagmfr.provenance import code_version
from pagmfr.study.spec import TrialSpec, cell_name

#: Where a cell runs and how reproducibly, not what it computes: never in its key.
NOT_IN_KEY = ("data.root", "data.num_workers", "train.device", "train.deterministic",
              "train.feature_cache_mb")  # fmt: skip
#: Keys added after studies had recorded cells, with the value that does what the code did
#: before them: at it, a key is left out, so cells recorded before it keep their keys (and
#: ``--keep-old-results`` finds them).
KEYED_OFF_DEFAULT = {"data.validation_images": "auto"}


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
    #: The config key as versions before 0.1.0's per-method keys computed it (over every
    #: method's settings): how --keep-old-results finds the cell's runs recorded by them.
    legacy_config_key: str = ""
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

    def spec(self) -> TrialSpec:
        """What the cell's trial receives."""
        return TrialSpec(
            self.key,
            self.variant,
            self.category,
            self.seed,
            self.kind,
            self.method,
            self.fingerprint,
            self.config_key,
            self.code,
            self.overrides,
            self.config.to_flat(),
        )


def describe_overrides(overrides: Mapping[str, Any]) -> str:
    """A variant's overrides as one line (``fusion.mode=none, loss.focal=5.0``): what the
    variant changes, readable in MLflow's runs table."""
    if not overrides:
        return "(base config)"
    return ", ".join(f"{key}={value}" for key, value in overrides.items())


@cache
def data_fingerprint(root: str, category: str) -> str:
    """Train and test files of one category (and its layout's own validation files); a
    readable marker when the data is broken (the trial then fails with the real error and is
    recorded as failed)."""
    try:
        resolved = resolve_data_root(root)
        splits = ["train", "test"]
        own_validation = validation_split(resolved, category)  # MVTec AD 2's validation/good
        splits += [own_validation] if own_validation else []
        parts = [MVTecAD(resolved, category, split, 32).fingerprint() for split in splits]
    except (ValueError, OSError) as err:
        return "unreadable-" + hashlib.sha256(str(err).encode()).hexdigest()[:12]
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


def short_hash(payload: dict[str, Any]) -> str:
    """A 20-hex-digit hash of JSON-able ``payload``: keys of cells and trials."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :20
    ]


def _keyed_config(config: Config) -> dict[str, Any]:
    """The shared keys and the cell's own method's: another method's settings never retrain
    it."""
    return _in_key(config.to_flat(own_method_only=True))


def _in_key(flat: dict[str, Any]) -> dict[str, Any]:
    """The settings that change what a cell computes (:data:`NOT_IN_KEY`,
    :data:`KEYED_OFF_DEFAULT`)."""
    return {
        k: v
        for k, v in flat.items()
        if k not in NOT_IN_KEY and (k not in KEYED_OFF_DEFAULT or KEYED_OFF_DEFAULT[k] != v)
    }


def config_key(config: Config, fingerprint: str) -> str:
    """A hash of the config (less where it runs) and the data: the cell under any code."""
    return short_hash({"config": _keyed_config(config), "data": fingerprint})


def cell_key(config: Config, fingerprint: str, code: str) -> str:
    """A hash of everything that changes a cell's result: config, data and code."""
    return short_hash({"config": _keyed_config(config), "data": fingerprint, "code": code})


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
        legacy_config_key=short_hash(
            {
                "config": _in_key(config.to_flat()),
                "data": fingerprint,
            }
        ),
        code=code,
        overrides=overrides,
    )


def unique(values: Sequence[Any], what: str) -> tuple[Any, ...]:
    """``values`` without repeats, in order, saying which were repeated: a category or seed
    named twice would train the same cell twice."""
    counts = Counter(values)  # in the order first named
    repeated = [str(value) for value, count in counts.items() if count > 1]
    if repeated:
        log(f"note: {what} {', '.join(repeated)} named more than once: each used once")
    return tuple(counts)


@dataclass(frozen=True)
class StudyGrid:
    """An ablation study's grid: every variant x category x seed, where a variant is a dict of
    dotted overrides of ``base`` (``{"w/o MFFM": {"fusion.mode": "none"}}``)."""

    base: Config
    variants: Mapping[str, Mapping[str, Any]]
    categories: Sequence[str]
    seeds: Sequence[int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", unique(self.categories, "categories"))
        object.__setattr__(self, "seeds", unique(self.seeds, "seeds"))

    def cells(self) -> list[Cell]:
        """Every cell, variant by variant. Variants that come out as the same cell (the base
        already sets what one of them changes, or it changes what its method does not read)
        are refused: their cells would be one cell under two names."""
        configs = {}
        for variant, overrides in self.variants.items():
            try:
                configs[variant] = self.base.with_overrides(dict(overrides))
            except ValueError as err:
                raise ValueError(f"variant {variant!r}: {err}") from err
        _refuse_identical_variants(self.base, self.variants, configs)
        require_backbone_weights({variant: config.backbone for variant, config in configs.items()})
        return [
            make_cell(variant, category, seed, config, describe_overrides(self.variants[variant]))
            for variant, config in configs.items()
            for category in self.categories
            for seed in self.seeds
        ]

    def declaration(
        self, study: str, cells: list[Cell], reused: Mapping[str, str]
    ) -> dict[str, Any]:
        """What a run of the study declares (on its MLflow run): every cell that should exist,
        in order, under the key of the run that stands for it (``reused``: an older run's)."""
        return {
            "study": study,
            "declared_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version(),
            "variants": [
                {"name": v, "overrides": describe_overrides(o)} for v, o in self.variants.items()
            ],
            "categories": [
                {"name": c, "kind": k}
                for c, k in dict.fromkeys((c.category, c.kind) for c in cells)
            ],
            "seeds": list(self.seeds),
            "cells": [
                {
                    "variant": c.variant,
                    "category": c.category,
                    "seed": c.seed,
                    "key": reused.get(c.key, c.key),
                    "config_key": c.config_key,
                }
                for c in cells
            ],
        }


def _refuse_identical_variants(
    base: Config, variants: Mapping[str, Mapping[str, Any]], configs: Mapping[str, Config]
) -> None:
    groups: dict[str, list[str]] = {}
    for variant, config in configs.items():
        groups.setdefault(short_hash(_keyed_config(config)), []).append(variant)
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
    unread = [
        f"{key} (not a setting of {configs[variant].method})"
        for variant in same
        for key in variants[variant]
        if key not in configs[variant].to_flat(own_method_only=True)
    ]
    named = " and ".join(
        f"{v!r} ({describe_overrides(variants[v]) if variants[v] else 'no overrides'})"
        for v in same
    )
    if unread:
        cause = f"their method does not read {', '.join(dict.fromkeys(unread))}"
    elif no_ops:
        cause = (
            f"the base config already sets {', '.join(dict.fromkeys(no_ops))} (from "
            "--base-config or --set?)"
        )
    else:
        cause = "their overrides end in the same values"
    raise ValueError(
        f"variants {named} give the same config, so their cells would be identical: {cause}. "
        "Change the base config or drop one of these variants."
    )


def cell_dir(cells_path: str | Path, study: str, key: str) -> Path:
    """A cell's working folder, stable across runs of the study: a restarted driver's trial
    resumes from the ``last.pt`` it finds there."""
    return Path(cells_path) / study / "cells" / key
