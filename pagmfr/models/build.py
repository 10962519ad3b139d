"""Building the configured method: the registry's factory plus the frozen backbone weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pagmfr.models.backbone import FrozenBackbone, load_backbone_weights
from pagmfr.models.base import AnomalyMethod
from pagmfr.registry import method_spec

if TYPE_CHECKING:
    from pagmfr.config import Config


def build_model(config: Config, load_weights: bool = True) -> AnomalyMethod:
    """Build the configured method with its frozen backbone weights loaded.

    Args:
        config: a validated config; ``config.method`` names a registered method.
        load_weights: load every frozen backbone's weights from ``backbone.weights``
            ("imagenet", "none" or a state-dict path); False when a checkpoint will supply
            every weight.

    Returns:
        The method, on the CPU, in training mode.
    """
    model = method_spec(config.method).factory(config)
    if not isinstance(model, AnomalyMethod):
        raise TypeError(
            f"method {config.method!r} built a {type(model).__name__}; a method must subclass "
            "pagmfr.models.AnomalyMethod"
        )
    if load_weights:
        for module in model.modules():
            if isinstance(module, FrozenBackbone):
                load_backbone_weights(module, config.backbone.weights)
    return model
