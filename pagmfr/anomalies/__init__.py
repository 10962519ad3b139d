"""Pseudo-anomaly generation: Perlin-masked textures, pasted objects, per-category choice.

The names below load on first use (``pagmfr.anomalies.make_generator``...): importing a light
part such as ``pagmfr.anomalies.settings`` (which ``pagmfr.config`` reads) loads neither
OpenCV, scikit-image nor torch.
"""

from pagmfr.lazy import lazy_attributes

_LAZY = {
    "DEFECT_TYPES": "pagmfr.anomalies.defects",
    "add_defect": "pagmfr.anomalies.defects",
    "foreground_mask": "pagmfr.anomalies.foreground",
    "PseudoAnomalyGenerator": "pagmfr.anomalies.generator",
    "make_generator": "pagmfr.anomalies.generator",
    "PerlinMaskSampler": "pagmfr.anomalies.perlin",
    "perlin_field": "pagmfr.anomalies.perlin",
    "GeneratorSettings": "pagmfr.anomalies.settings",
    "AnomalyFn": "pagmfr.anomalies.strategies",
    "StrategyContext": "pagmfr.anomalies.strategies",
    "available_strategies": "pagmfr.anomalies.strategies",
    "paste": "pagmfr.anomalies.strategies",
    "register_strategy": "pagmfr.anomalies.strategies",
    "until_visible": "pagmfr.anomalies.strategies",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = sorted(_LAZY)
