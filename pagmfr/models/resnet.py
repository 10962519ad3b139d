"""Frozen torchvision ResNets returning the features of chosen stages."""

from __future__ import annotations

import re

import torch
import torchvision
from torch import nn

from pagmfr.backbones import prefetch_hint
from pagmfr.models.backbone import FrozenBackbone


class ResNetFeatures(FrozenBackbone):
    """A frozen torchvision ResNet (resnet18, resnet34, resnet50, wide_resnet50_2); ImageNet
    normalisation happens here."""

    optional_keys = re.compile(r"^fc\.|num_batches_tracked$")
    family = "resnet"

    def __init__(self, name: str, layers: tuple[int, ...] = (1, 2, 3)):
        super().__init__(name, layers)
        self.net.fc = nn.Identity()
        for stage in range(max(self.layers) + 1, 5):  # stages past the deepest used one never run
            setattr(self.net, f"layer{stage}", nn.Identity())
        self.freeze()

    @classmethod
    def full_network(cls, name: str) -> nn.Module:
        return getattr(torchvision.models, name)(weights=None)

    @classmethod
    def unused_key(cls, key: str, deepest: int) -> bool:
        return any(key.startswith(f"layer{stage}.") for stage in range(deepest + 1, 5))

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        features = []
        for stage in range(1, max(self.layers) + 1):
            x = getattr(net, f"layer{stage}")(x)
            if stage in self.layers:
                features.append(x)
        return features

    def imagenet_state(self) -> tuple[dict[str, torch.Tensor], str]:
        """torchvision's ImageNet weights (cached in TORCH_HOME, downloaded when missing)."""
        weights = torchvision.models.get_model_weights(self.name).DEFAULT
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # URLError, timeouts, hash mismatch: all mean "not available"
            raise RuntimeError(
                f"ImageNet weights for {self.name} are not available ({type(err).__name__}: "
                f"{err}); {prefetch_hint(self.name)}"
            ) from err
        return state, f"torchvision's ImageNet weights for {self.name}"
