"""The generator's knobs, defined once and validated once, with errors that name the knob.

The config's ``generator`` section extends :class:`GeneratorSettings` with the strategy and the
source folders, so every knob here is also a ``generator.<knob>`` config key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pagmfr.settings import Check


def _range_check(name: str, value: Any, lo: float, hi: float) -> Check:
    pair = isinstance(value, (tuple, list)) and len(value) == 2
    holds = pair and lo <= value[0] <= value[1] <= hi
    return name, holds, f"must satisfy {lo} <= min <= max <= {hi} (a (min, max) pair)"


@dataclass
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
        for name in ("blend", "perlin_scales", "coverage", "object_scale"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        for name, holds, requirement in self.checks():
            if not holds:
                raise ValueError(f"{name} {requirement}; got {getattr(self, name)!r}")

    def checks(self) -> list[Check]:
        """Every knob's constraint; the config reports failures under ``generator.<knob>``."""
        checks = [
            (
                "normal_probability",
                0.0 <= self.normal_probability <= 1.0,
                "must be in [0, 1]",
            ),
            _range_check("blend", self.blend, 0.0, 1.0),
            _range_check("perlin_scales", self.perlin_scales, 0, 8),
            _range_check("coverage", self.coverage, 0.0, 1.0),
            _range_check("object_scale", self.object_scale, 0.01, 1.0),
            ("perlin_threshold", -1.0 < self.perlin_threshold < 1.0, "must be in (-1, 1)"),
        ]
        for name, least in (("feather", 0), ("bank_size", 1), ("max_tries", 1)):
            value = getattr(self, name)
            checks.append(
                (name, isinstance(value, int) and value >= least, f"must be an int >= {least}")
            )
        return checks

    def knobs(self) -> dict[str, Any]:
        """This object's knobs only (not the fields a subclass adds), e.g. to rebuild it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(GeneratorSettings)}

    @classmethod
    def from_knobs(cls, **knobs: Any) -> GeneratorSettings:
        """Settings from keyword knobs; an unknown knob fails naming the known ones."""
        known = {f.name for f in dataclasses.fields(GeneratorSettings)}
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise ValueError(
                f"unknown generator knob(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return GeneratorSettings(**knobs)
