"""The generator's knobs, validated once with errors that name the knob."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")
    if not lo <= value[0] <= value[1] <= hi:
        raise ValueError(f"{name} must satisfy {lo} <= min <= max <= {hi}, got {tuple(value)}")


@dataclass(frozen=True)
class GeneratorSettings:
    """Every knob of the built-in strategies; user strategies may read them too."""

    #: How often a sample is left normal (DRAEM uses 0.5).
    normal_probability: float = 0.5
    #: Range of beta in ``out = (1 - m) img + m ((1 - beta) tex + beta img)``.
    blend: tuple[float, float] = (0.0, 0.8)
    #: Perlin cells per axis are 2**k for k in this range (DRAEM: 0..5).
    perlin_scales: tuple[int, int] = (0, 5)
    perlin_threshold: float = 0.5
    #: Rotate Perlin fields by up to +-90 degrees (DRAEM does).
    rotate: bool = True
    #: Fraction of the image a Perlin mask may cover; others are drawn again.
    coverage: tuple[float, float] = (0.001, 0.6)
    #: Pasted object size: its longer side as a fraction of the image's shorter side.
    object_scale: tuple[float, float] = (0.15, 0.4)
    #: Width in pixels of the soft edge blended around a pasted object.
    feather: int = 2
    #: At most this many images are taken from a user's texture or object folder.
    bank_size: int = 256
    #: Draws before giving up on a visible anomaly.
    max_tries: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.normal_probability <= 1.0:
            raise ValueError(f"normal_probability must be in [0, 1], got {self.normal_probability}")
        _check_range("blend", self.blend, 0.0, 1.0)
        _check_range("perlin_scales", self.perlin_scales, 0, 8)
        _check_range("coverage", self.coverage, 0.0, 1.0)
        _check_range("object_scale", self.object_scale, 0.01, 1.0)
        if not -1.0 < self.perlin_threshold < 1.0:
            raise ValueError(f"perlin_threshold must be in (-1, 1), got {self.perlin_threshold}")
        for name, least in (("feather", 0), ("bank_size", 1), ("max_tries", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")

    @classmethod
    def from_knobs(cls, **knobs: Any) -> GeneratorSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise ValueError(
                f"unknown generator knob(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in knobs.items()})
