"""Models and the registry that builds them from a config: ``build_model(config)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pagmfr.config import Config
from pagmfr.models.backbone import ResNetFeatures, load_backbone_weights
from pagmfr.models.pagmfr import PAGMFR
from pagmfr.models.rgpkd import RGPKD

_MODELS: dict[str, Callable[[Config], nn.Module]] = {"pagmfr": PAGMFR, "rgpkd": RGPKD}


def register_model(name: str, factory: Callable[[Config], nn.Module]) -> None:
    _MODELS[name] = factory


def build_model(config: Config, load_weights: bool = True) -> nn.Module:
    """The method's network with its frozen backbone weights loaded from the weights spec
    (skip with ``load_weights=False`` when a checkpoint will supply every weight)."""
    if config.method not in _MODELS:
        raise ValueError(
            f"unknown method {config.method!r}; available: {', '.join(sorted(_MODELS))}"
        )
    model = _MODELS[config.method](config)
    if load_weights:
        for module in model.modules():
            if isinstance(module, ResNetFeatures):
                load_backbone_weights(module, config.backbone.weights)
    return model


__all__ = [
    "RGPKD",
    "PAGMFR",
    "ResNetFeatures",
    "build_model",
    "load_backbone_weights",
    "register_model",
]
