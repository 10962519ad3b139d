"""An HPO trial's cells: its sampled overrides on the base config, once per category."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pagmfr.config import Config
from pagmfr.study.cells import describe_overrides, make_cell, short_hash
from pagmfr.study.spec import TrialSpec


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

    def spec_for(self, params: Mapping[str, Any]) -> TrialSpec:
        """The trial's spec: its cells, one per category, and, for the MLflow run that records
        the trial, one key over them (its variant name is ``hpo-<key>``)."""
        described = describe_overrides(self.overrides(params))
        cells = [
            make_cell("", category, self.seed, self.config_for(params, category), described)
            for category in self.categories
        ]
        key = short_hash({"cells": [cell.key for cell in cells]})
        variant = "hpo-" + key[:8]
        specs = tuple(dataclasses.replace(cell.spec(), variant=variant) for cell in cells)
        return dataclasses.replace(
            specs[0],
            key=key,
            category="+".join(self.categories),
            kind="+".join(dict.fromkeys(cell.kind for cell in cells)),
            fingerprint=short_hash({"data": [cell.fingerprint for cell in cells]}),
            config_key=short_hash({"cells": [cell.config_key for cell in cells]}),
            cells=specs,
        )
