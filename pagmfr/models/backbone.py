"""The frozen-backbone contract every method encodes images with, and its weights.

A backbone returns the features of ``layers`` (1-4: the stages at strides 4, 8, 16 and 32) for
images in [0, 1], normalising them as its weights expect. It is frozen and always in eval mode
(its batch-norm statistics never move). Modules are pure: weights are loaded by
:func:`load_backbone_weights` (called from ``build_model``), never downloaded inside a module.
Each family lives in its own file (:mod:`pagmfr.models.resnet`,
:mod:`pagmfr.models.efficientnet_lite`); :func:`build_backbone` builds any of them by name.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from pagmfr.backbones import BACKBONES, STAGE_STRIDES, BackboneInfo, backbone_info
from pagmfr.files import load_tensor_file

#: Offending keys an error shows.
_SHOWN_KEYS = 3


class FrozenBackbone(nn.Module):
    """Base of every backbone: ``net`` (the family's network, stages past the deepest used one
    removed), the input normalisation of ``name``'s weights, ``channels`` and ``strides`` of
    the used stages. A family implements :meth:`stage_features` and the class methods that
    describe its state dicts."""

    #: Keys a state dict may lack: the classifier (a feature extractor saved without its head,
    #: never used here) and batch-norm step counts (absent from older files, never used here).
    optional_keys: ClassVar[re.Pattern[str]] = re.compile(r"num_batches_tracked$")
    #: The ``BackboneInfo.family`` this class builds.
    family: ClassVar[str] = ""

    def __init__(self, name: str, layers: tuple[int, ...]):
        super().__init__()
        self.info: BackboneInfo = backbone_info(name)
        if self.info.family != self.family:
            raise ValueError(f"{name} is not a {self.family} backbone: use build_backbone")
        self.name = name
        self.layers = tuple(layers)
        self.register_buffer("mean", torch.tensor(self.info.mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(self.info.std).view(1, 3, 1, 1), False)
        self.net = self.full_network(name)

    def freeze(self) -> None:
        """No gradients, eval mode: called by each family once ``net`` is built."""
        self.requires_grad_(False)
        self.eval()

    @property
    def channels(self) -> list[int]:
        """Channels of each used stage."""
        return [self.info.channels[layer - 1] for layer in self.layers]

    @property
    def strides(self) -> list[int]:
        """Stride of each used stage relative to the input."""
        return [STAGE_STRIDES[layer - 1] for layer in self.layers]

    def train(self, mode: bool = True) -> FrozenBackbone:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The used stages' features of ``images`` (B, 3, H, W) in [0, 1]."""
        return self.stage_features((images - self.mean) / self.std)

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The used stages' features of normalised images."""
        raise NotImplementedError

    # ---- what a family's state dicts look like ----

    @classmethod
    def full_network(cls, name: str) -> nn.Module:
        """``name``'s whole network with random weights (on the meta device when asked)."""
        raise NotImplementedError

    @classmethod
    def unused_key(cls, key: str, deepest: int) -> bool:
        """A key of a stage deeper than ``deepest``: a backbone that stops there has no use
        for it (the family removes such stages, and a state dict saved from one lacks them)."""
        raise NotImplementedError

    @classmethod
    def adopt_names(cls, state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
        """``state`` under this family's key names (e.g. another implementation's names
        mapped in order). Default: as it is."""
        return state

    def imagenet_state(self) -> tuple[dict[str, torch.Tensor], str]:
        """The ImageNet weights of ``name`` and where they came from, in words."""
        raise NotImplementedError


def _family(name: str) -> type[FrozenBackbone]:
    """The class that builds ``name``'s family, imported when first needed (the Lite family
    imports timm, which is slow to import)."""
    if backbone_info(name).family == "resnet":
        from pagmfr.models.resnet import ResNetFeatures

        return ResNetFeatures
    from pagmfr.models.efficientnet_lite import EfficientNetLiteFeatures

    return EfficientNetLiteFeatures


def build_backbone(name: str, layers: tuple[int, ...]) -> FrozenBackbone:
    """The frozen backbone ``name`` (any of :data:`pagmfr.backbones.BACKBONES`) returning the
    features of ``layers``, with random weights: :func:`load_backbone_weights` loads them."""
    return _family(name)(name, layers)


@cache
def architecture_shapes(name: str) -> dict[str, torch.Size]:
    """Every key of ``name``'s whole network and its tensor's shape, from a model built on the
    meta device: no memory, no initialisation cost (and once per process). Read only."""
    with torch.device("meta"):
        net = _family(name).full_network(name)
    return {key: value.shape for key, value in net.state_dict().items()}


def architecture_mismatch(state: dict[str, torch.Tensor], name: str, deepest: int = 4) -> list[str]:
    """Why ``state`` is not a state dict of ``name`` used up to stage ``deepest``: its missing,
    unexpected and reshaped keys, a few of each named (empty: it fits).
    ``load_state_dict(strict=False)`` would accept another backbone's weights where the keys it
    knows fit, and train on a mixed network."""
    family = _family(name)
    expected = architecture_shapes(name)
    missing = [
        k
        for k in expected
        if k not in state
        and not family.optional_keys.search(k)
        and not family.unused_key(k, deepest)
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


def _fitting_architecture(state: dict[str, torch.Tensor], family: str) -> str | None:
    """The backbone of ``family`` that ``state`` is a state dict of (None: none of them):
    what to set backbone.name to."""
    names = [name for name, info in BACKBONES.items() if info.family == family]
    return next(
        (n for n in names if not architecture_mismatch(_family(n).adopt_names(state, n), n)),
        None,
    )


def check_backbone_state(
    state: dict[str, torch.Tensor], name: str, source: str, deepest: int = 4
) -> None:
    """Refuse a state dict that is not ``name``'s, saying which architecture it fits, or one
    holding NaN or inf (a diverged save): either would train a broken backbone and end in a
    message about the learning rate, far from its cause."""
    mismatch = architecture_mismatch(state, name, deepest)
    if mismatch:
        fits = _fitting_architecture(state, backbone_info(name).family)
        fix = (
            f"they are {fits} weights: set backbone.name to {fits} (--backbone {fits})"
            if fits
            else f"use a state dict saved from {name} (torch.save(model.state_dict(), path))"
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


def load_backbone_weights(backbone: FrozenBackbone, spec: str) -> None:
    """Load ``spec`` into ``backbone``: "imagenet" (the backbone's own ImageNet weights:
    packaged with pagmfr or an extra for EfficientNet-Lite, torchvision's cache for the
    ResNets), "none" (keep random weights), or a path to a state dict of the backbone's
    architecture (``module.`` prefixes and a missing classifier are fine)."""
    if spec == "none":
        return
    state, source = backbone.imagenet_state() if spec == "imagenet" else _state_from_file(spec)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    state = type(backbone).adopt_names(state, backbone.name)
    check_backbone_state(state, backbone.name, source, max(backbone.layers))
    # Unused stages and the classifier have no parameters here: their keys are left out.
    backbone.net.load_state_dict(state, strict=False)
