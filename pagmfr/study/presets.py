"""Study presets: a study script's named sets of defaults (data, grid, training overrides).

Light on purpose (no Ray, no torch): the tests and the CLI read the quick settings from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The quickest training that still runs every part of a method: 64 px, random backbone
#: weights, small batches, light smoothing. Tests and smoke presets build on it.
QUICK_TRAINING: dict[str, Any] = {
    "data.image_size": 64,
    "train.batch_size": 8,
    "backbone.weights": "none",
    "anomaly.smoothing_sigma": 1.0,
}

#: The smoke presets' training: minutes on 2 CPUs, no downloads. A pipeline check, not a result.
SMOKE_TRAINING: dict[str, Any] = {**QUICK_TRAINING, "train.epochs": 2}

#: The paper's training setting (MVTec AD at 256 px, ImageNet weights); presets add epochs.
PAPER_TRAINING: dict[str, Any] = {
    "data.image_size": 256,
    "train.batch_size": 32,
    "backbone.weights": "imagenet",
    "data.num_workers": 8,
}


@dataclass(frozen=True)
class Preset:
    """A named set of defaults for a study script; every field can be overridden on the
    command line (``--categories``, ``--seeds``, ``--variants``, ``--trials``, ``--set``)."""

    categories: Sequence[str]
    seeds: Sequence[int]
    #: Dotted config overrides applied to every cell.
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: The data root the preset brings (the embedded dataset); None: ``--data`` is required.
    data: str | None = None
    #: Ablation: the variants run by default (None: all of the script's variants).
    variants: Sequence[str] | None = None
    #: HPO: the trial budget.
    trials: int | None = None
    #: HPO: epochs every trial runs before ASHA may stop it, and 1 in ``reduction_factor``
    #: trials kept at each rung.
    grace_period: int = 1
    reduction_factor: int = 2
