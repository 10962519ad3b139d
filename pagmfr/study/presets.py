"""Study presets: a study script's named sets of defaults (data, grid, training overrides).

Light on purpose (no Ray, no torch): the tests and the CLI read the quick settings from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The quickest training that still runs every part of a method: 64 px, the default backbone
#: with its ImageNet weights (where users run), small batches, light smoothing. Tests and smoke
#: presets build on it.
QUICK_TRAINING: dict[str, Any] = {
    "data.image_size": 64,
    "train.batch_size": 8,
    "anomaly.smoothing_sigma": 1.0,
}

#: The smoke presets' training: minutes on 2 CPUs, no downloads. A pipeline check, not a result.
SMOKE_TRAINING: dict[str, Any] = {**QUICK_TRAINING, "train.epochs": 2}

#: The demo's training: ImageNet EfficientNet-Lite0 (the default backbone, installed with
#: pagmfr), the embedded dataset at its own 128 px, 15 epochs of batch 8, tested at the epoch
#: of its best validation AU-PRO (the default selection protocol).
DEMO_TRAINING: dict[str, Any] = {
    "data.image_size": 128,
    "train.batch_size": 8,
    "train.epochs": 15,
}

#: The paper's training setting (MVTec AD at 256 px, ImageNet weights, PyTorch's deterministic
#: algorithms: a paper's numbers should come back when its cells are rerun); presets add epochs.
PAPER_TRAINING: dict[str, Any] = {
    "data.image_size": 256,
    "train.batch_size": 32,
    "backbone.weights": "imagenet",
    "data.num_workers": 8,
    "train.deterministic": True,
}


@dataclass(frozen=True)
class GpusPerTrial:
    """The GPUs each trial requests, by method: a default for every method and overrides by
    registered method name. Fractions pack several trials onto one GPU; 0 trains on CPUs."""

    default: float = 0.0
    by_method: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in {"default": self.default, **self.by_method}.items():
            if not value >= 0:  # NaN too
                raise ValueError(f"GPUs per trial for {name} must be >= 0, not {value}")

    def of(self, method: str) -> float:
        """The GPUs a trial of ``method`` requests."""
        return self.by_method.get(method, self.default)

    def any(self) -> bool:
        """Whether any method's trials request a GPU."""
        return bool(self.default or any(self.by_method.values()))

    def describe(self) -> str:
        """``0.25`` or ``0.25 (rgpkd 0.5)``: as the dry run and errors show it."""
        extra = ", ".join(f"{m} {g:g}" for m, g in sorted(self.by_method.items()))
        return f"{self.default:g}" + (f" ({extra})" if extra else "")

    @classmethod
    def parse(cls, values: Sequence[str], base: GpusPerTrial | None = None) -> GpusPerTrial:
        """From command-line words: ``N`` is every method's share (it replaces ``base``),
        ``METHOD=N`` one method's (on top of ``base``)."""
        default = base.default if base else 0.0
        by_method = dict(base.by_method) if base else {}
        for value in values:
            method, _, number = value.rpartition("=")
            try:
                share = float(number)
            except ValueError:
                raise ValueError(
                    f"--gpus-per-trial {value!r}: expected a number (0.5) or METHOD=NUMBER "
                    "(rgpkd=0.5)"
                ) from None
            if method:
                by_method[method] = share
            else:
                default, by_method = share, {}
        return cls(default, by_method)


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
    #: GPUs per trial (None: none, and a study on a cluster with GPUs refuses to start).
    gpus_per_trial: GpusPerTrial | None = None
    #: A Tune checkpoint (for resuming on another node) every this many epochs, and at the end.
    checkpoint_every: int = 1
