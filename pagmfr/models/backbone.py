"""Frozen torchvision ResNets that return the features of chosen stages.

The module is pure: weights are loaded by :func:`load_backbone_weights` (called from
``build_model``), never downloaded inside the module.
"""

from __future__ import annotations

import re
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


#: Keys a state dict may lack: the classifier (a feature extractor saved without its head,
#: never used here) and batch-norm step counts (absent from older files, never used here).
_OPTIONAL_KEYS = re.compile(r"^fc\.|num_batches_tracked$")
#: Offending keys an error shows.
_SHOWN_KEYS = 3


def architecture_shapes(name: str) -> dict[str, torch.Size]:
    """Every key of torchvision's ``name`` and its tensor's shape, from a model built on the
    meta device: no memory, no initialisation cost."""
    with torch.device("meta"):
        net = getattr(torchvision.models, name)(weights=None)
    return {key: value.shape for key, value in net.state_dict().items()}


def _unused_stage(key: str, deepest: int) -> bool:
    """A key of a stage deeper than ``deepest``: a backbone that stops there has no use for
    it (``ResNetFeatures`` replaces such stages, and a state dict saved from one lacks them)."""
    return any(key.startswith(f"layer{stage}.") for stage in range(deepest + 1, 5))


def architecture_mismatch(state: dict[str, torch.Tensor], name: str, deepest: int = 4) -> list[str]:
    """Why ``state`` is not a state dict of ``name`` used up to stage ``deepest``: its missing,
    unexpected and reshaped keys, a few of each named (empty: it fits).
    ``load_state_dict(strict=False)`` would accept another ResNet's weights where the keys it
    knows fit, and train on a mixed network."""
    expected = architecture_shapes(name)
    missing = [
        k
        for k in expected
        if k not in state and not _OPTIONAL_KEYS.search(k) and not _unused_stage(k, deepest)
    ]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} instead of {tuple(expected[k])}"
        for k in state
        if k in expected and state[k].shape != expected[k]
    ]
    found = (
        ("missing key(s)", missing),
        ("unexpected key(s)", unexpected),
        ("key(s) of another shape", reshaped),
    )
    return [
        f"{len(keys)} {what} ({', '.join(keys[:_SHOWN_KEYS])}"
        + (", ...)" if len(keys) > _SHOWN_KEYS else ")")
        for what, keys in found
        if keys
    ]


def _fitting_architecture(state: dict[str, torch.Tensor]) -> str | None:
    """The backbone ``state`` is a state dict of (None: none of them): what to set
    backbone.name to."""
    return next((name for name in STAGE_CHANNELS if not architecture_mismatch(state, name)), None)


def check_backbone_state(
    state: dict[str, torch.Tensor], name: str, source: str, deepest: int = 4
) -> None:
    """Refuse a state dict that is not ``name``'s, saying which architecture it fits, or one
    holding NaN or inf (a diverged save): either would train a broken backbone and end in a
    message about the learning rate, far from its cause."""
    mismatch = architecture_mismatch(state, name, deepest)
    if mismatch:
        fits = _fitting_architecture(state)
        fix = (
            f"they are {fits} weights: set backbone.name to {fits} (--backbone {fits})"
            if fits
            else f"use a state dict saved from torchvision's {name} "
            "(torch.save(model.state_dict(), path))"
        )
        raise ValueError(
            f"{source}: these weights do not fit {name} (backbone.name): "
            f"{'; '.join(mismatch)}; {fix}"
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise ValueError(
            f"{source}: {len(broken)} tensor(s) hold NaN or inf values (e.g. "
            f"{', '.join(broken[:_SHOWN_KEYS])}): these weights are broken; save them again "
            "from a model that trained without diverging, or use 'imagenet' or 'none'"
        )


def _state_from_file(spec: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in the file ``spec`` (bare, or under a ``state_dict`` entry), and the
    file's path for errors."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file not found: {path}; the weights spec is 'imagenet', "
            "'none' or a path to a state dict"
        )
    fix = "the weights spec is 'imagenet', 'none' or a file of torch.save(model.state_dict())"
    state = load_tensor_file(path, "backbone weights file", fix)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict ({type(state).__name__}); {fix}")
    odd = [k for k, v in state.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if odd:
        raise ValueError(f"{path}: not a state dict ({odd[0]!r} is not a named tensor); {fix}")
    return state, str(path)


def _imagenet_state(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's ImageNet weights of ``name`` (cached in TORCH_HOME), and their name."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # URLError, timeouts, hash mismatch: all mean "not available"
        raise RuntimeError(
            f"ImageNet weights for {name} are not available ({type(err).__name__}: "
            f"{err}); {prefetch_hint(name)}"
        ) from err
    return state, f"torchvision's ImageNet weights for {name}"


def load_backbone_weights(backbone: ResNetFeatures, spec: str) -> None:
    """Load ``spec`` into ``backbone``: "imagenet" (torchvision's weight enum, cached in
    TORCH_HOME), "none" (keep random weights), or a path to a state dict of the backbone's
    architecture (``module.`` prefixes and a missing classifier are fine)."""
    if spec == "none":
        return
    state, source = _imagenet_state(backbone.name) if spec == "imagenet" else _state_from_file(spec)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    check_backbone_state(state, backbone.name, source, max(backbone.layers))
    # Unused stages and the classifier have no parameters here: their keys are left out.
    backbone.net.load_state_dict(state, strict=False)
