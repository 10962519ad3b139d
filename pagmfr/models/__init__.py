"""Methods, their contract and the registry that builds them: ``build_model(config)``.

Importing this package registers the built-in methods (each registers itself in its file).
"""

from pagmfr.models.backbone import ResNetFeatures, load_backbone_weights
from pagmfr.models.base import AnomalyMethod, Prediction
from pagmfr.models.pagmfr import PAGMFR
from pagmfr.models.patchcore import PatchCore, PatchCoreSettings
from pagmfr.models.registry import (
    MethodSpec,
    available_methods,
    build_model,
    method_spec,
    register_model,
)
from pagmfr.models.rgpkd import RGPKD

__all__ = [
    "PAGMFR",
    "PatchCore",
    "PatchCoreSettings",
    "RGPKD",
    "AnomalyMethod",
    "MethodSpec",
    "Prediction",
    "ResNetFeatures",
    "available_methods",
    "build_model",
    "load_backbone_weights",
    "method_spec",
    "register_model",
]
