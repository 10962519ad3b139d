"""Methods, their contract and how they are built: ``build_model(config)``.

The registry (:mod:`pagmfr.registry`) knows which methods exist; ``register_model`` is
re-exported here for scripts that register their own.
"""

from pagmfr.models.backbone import FrozenBackbone, build_backbone, load_backbone_weights
from pagmfr.models.base import AnomalyMethod, Prediction
from pagmfr.models.build import build_model
from pagmfr.models.efficientnet_lite import EfficientNetLiteFeatures
from pagmfr.models.pagmfr import PAGMFR, PAGMFRSettings
from pagmfr.models.patchcore import PatchCore, PatchCoreSettings
from pagmfr.models.resnet import ResNetFeatures
from pagmfr.models.rgpkd import RGPKD, RGPKDSettings
from pagmfr.registry import MethodSpec, available_methods, method_spec, register_model

__all__ = [
    "PAGMFR",
    "PAGMFRSettings",
    "PatchCore",
    "PatchCoreSettings",
    "RGPKD",
    "RGPKDSettings",
    "AnomalyMethod",
    "EfficientNetLiteFeatures",
    "FrozenBackbone",
    "MethodSpec",
    "Prediction",
    "ResNetFeatures",
    "available_methods",
    "build_backbone",
    "build_model",
    "load_backbone_weights",
    "method_spec",
    "register_model",
]
