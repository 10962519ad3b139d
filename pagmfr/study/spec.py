"""The trial spec: what one trial of a study trains, typed on this side of Ray and MLflow.

A spec crosses into Ray (a trial's params) and MLflow (a cell run's tags and params) as a plain
dict only at that border (:meth:`TrialSpec.to_dict`, :meth:`TrialSpec.from_dict`): everything
in between reads named fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def cell_name(variant: str, category: str, seed: int) -> str:
    """How a cell is named to people: summaries, MLflow run names, trial names."""
    return f"{variant} / {category} / seed {seed}"


@dataclass(frozen=True)
class TrialSpec:
    """One trial: an ablation cell, or an HPO trial whose ``cells`` are its categories' cells
    (then its own fields describe the trial as a whole, for the run that records it)."""

    key: str
    variant: str
    category: str
    seed: int
    #: The category's kind (texture, object; ``texture+object`` for a search's trial).
    kind: str
    method: str
    #: The data's fingerprint.
    fingerprint: str
    #: The key without the code: the same cell under any code version.
    config_key: str
    #: The fingerprint of the code that trains the cell.
    code: str
    #: What the cell's variant changes, as people read it ("fusion.mode=none").
    overrides: str
    #: The cell's full flat config (``Config.to_flat()``); a dict, so a spec is not hashed.
    config: dict[str, Any] = field(hash=False)
    #: An HPO trial's cells, one per category of the search; empty for an ablation cell.
    cells: tuple[TrialSpec, ...] = ()

    @property
    def name(self) -> str:
        """The trial's human-readable name."""
        return cell_name(self.variant, self.category, self.seed)

    def members(self) -> tuple[TrialSpec, ...]:
        """The cells this trial trains: its own, or an HPO trial's per-category cells."""
        return self.cells or (self,)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for Ray's params: travels to any worker and back unchanged."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain["config"] = dict(self.config)
        plain["cells"] = [cell.to_dict() for cell in self.cells]
        return plain

    @classmethod
    def from_dict(cls, plain: dict[str, Any]) -> TrialSpec:
        """The spec of :meth:`to_dict`'s output."""
        cells = tuple(cls.from_dict(cell) for cell in plain.get("cells", ()))
        return cls(**{**plain, "config": dict(plain["config"]), "cells": cells})
