"""Frozen torchvision ResNets that return the features of chosen stages.

The module is pure: weights are loaded by :func:`load_backbone_weights` (called from the model
registry), never downloaded inside the module.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from pagmfr.files import load_tensor_file

STAGE_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "wide_resnet50_2": (256, 512, 1024, 2048),
}
STAGE_STRIDES = (4, 8, 16, 32)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetFeatures(nn.Module):
    """A frozen ResNet (eval mode always: its batch-norm statistics never move) returning the
    features of ``layers`` (1-4) for images in [0, 1]; ImageNet normalisation happens here."""

    def __init__(self, name: str, layers: tuple[int, ...] = (1, 2, 3)):
        super().__init__()
        if name not in STAGE_CHANNELS:
            raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(STAGE_CHANNELS)}")
        self.name = name
        self.layers = tuple(layers)
        self.net = getattr(torchvision.models, name)(weights=None)
        self.net.fc = nn.Identity()
        for stage in range(max(self.layers) + 1, 5):  # stages past the deepest used one never run
            setattr(self.net, f"layer{stage}", nn.Identity())
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def channels(self) -> list[int]:
        """Channels of each used stage."""
        return [STAGE_CHANNELS[self.name][layer - 1] for layer in self.layers]

    @property
    def strides(self) -> list[int]:
        """Stride of each used stage relative to the input."""
        return [STAGE_STRIDES[layer - 1] for layer in self.layers]

    def train(self, mode: bool = True) -> ResNetFeatures:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = (images - self.mean) / self.std
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        features = []
        for stage in range(1, max(self.layers) + 1):
            x = getattr(net, f"layer{stage}")(x)
            if stage in self.layers:
                features.append(x)
        return features


def prefetch_hint(name: str) -> str:
    """How to bring torchvision's weights to a machine without internet access."""
    return (
        f'pre-fetch them on a machine with internet access: python -c "import torchvision; '
        f"torchvision.models.{name}(weights='DEFAULT')\" (saved under $TORCH_HOME/hub/checkpoints, "
        "default ~/.cache/torch) and copy that folder here, or pass a state-dict file as the "
        "weights spec, or 'none' for random weights"
    )


def load_backbone_weights(backbone: ResNetFeatures, spec: str) -> None:
    """Load ``spec`` into ``backbone``: "imagenet" (torchvision's weight enum, cached in
    TORCH_HOME), "none" (keep random weights), or a path to a state dict."""
    if spec == "none":
        return
    if spec == "imagenet":
        weights = torchvision.models.get_model_weights(backbone.name).DEFAULT
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # URLError, timeouts, hash mismatch: all mean "not available"
            raise RuntimeError(
                f"ImageNet weights for {backbone.name} are not available ({type(err).__name__}: "
                f"{err}); {prefetch_hint(backbone.name)}"
            ) from err
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone weights file not found: {path}; the weights spec is 'imagenet', "
                "'none' or a path to a state dict"
            )
        fix = "the weights spec is 'imagenet', 'none' or a file of torch.save(model.state_dict())"
        state = load_tensor_file(path, "backbone weights file", fix)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise ValueError(f"{path}: not a state dict ({type(state).__name__}); {fix}")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    # Unused stages and the classifier have no parameters here, so their keys are "unexpected"
    # (fine); every missing key is one the backbone runs with.
    try:
        missing, _ = backbone.net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor shapes differ: weights of another architecture
        raise ValueError(
            f"backbone weights {spec} do not fit {backbone.name}: "
            f"{str(err).splitlines()[1].strip()}"
        ) from err
    if missing:
        raise ValueError(
            f"backbone weights {spec} do not fit {backbone.name}: {len(missing)} parameters "
            f"missing, e.g. {missing[0]}"
        )
