"""How every method's anomaly map is smoothed and turned into an image score (``anomaly.*``).

These are the scoring keys every method reads, so they are shared config; a method's own
``anomaly.*`` keys (PAGMFR's branches and head) belong to its settings. A leaf module: the
config and the methods both build on it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pagmfr.settings import Check


@dataclass
class ScoringSettings:
    """Smoothing of the map and the image score drawn from it."""

    #: Gaussian smoothing of the anomaly map (pixels at model resolution; 0: off).
    smoothing_sigma: float = 4.0
    #: Image score: max of the map, or mean of its top-k pixels ...
    score: Literal["max", "topk"] = "max"
    topk: int = 100
    #: ... smoothed with this sigma first (pixels at model resolution; 0: unsmoothed, as
    #: PatchCore scores its patches before smoothing): the reported map's smoothing_sigma
    #: blurs a thin defect's peak into the normal texture's noise.
    score_sigma: float = 0.0

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [
            ("smoothing_sigma", self.smoothing_sigma >= 0.0, "must be >= 0"),
            ("score_sigma", self.score_sigma >= 0.0, "must be >= 0"),
            ("topk", self.topk >= 1, "must be >= 1"),
        ]
