"""Pseudo-anomaly generation: Perlin-masked textures, pasted objects, per-category choice."""

from pagmfr.anomalies.defects import DEFECT_TYPES, add_defect
from pagmfr.anomalies.foreground import foreground_mask
from pagmfr.anomalies.generator import PseudoAnomalyGenerator, make_generator
from pagmfr.anomalies.perlin import PerlinMaskSampler, perlin_field
from pagmfr.anomalies.settings import GeneratorSettings
from pagmfr.anomalies.strategies import (
    AnomalyFn,
    StrategyContext,
    available_strategies,
    paste,
    register_strategy,
    until_visible,
)

__all__ = [
    "DEFECT_TYPES",
    "AnomalyFn",
    "GeneratorSettings",
    "PerlinMaskSampler",
    "PseudoAnomalyGenerator",
    "StrategyContext",
    "available_strategies",
    "add_defect",
    "foreground_mask",
    "make_generator",
    "paste",
    "perlin_field",
    "register_strategy",
    "until_visible",
]
