import itertools

import numpy as np
import pytest
import torch
import torchvision
from conftest import tiered
from skimage.color import rgb2lab

from pagmfr.backbones import BACKBONES
from pagmfr.config import Config
from pagmfr.engine import model_from_checkpoint
from pagmfr.losses import lab_difference_map, ssim_map
from pagmfr.models import ResNetFeatures, build_model, load_backbone_weights
from pagmfr.models.common import MapStats, smooth_and_score
from pagmfr.scoring import ScoringSettings
from pagmfr.study.presets import QUICK_TRAINING

SIZE = 64


def _config(**overrides):
    return Config().with_overrides({**QUICK_TRAINING, **overrides})


def _batch(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, SIZE, SIZE, generator=g)
    pseudo, mask = image.clone(), torch.zeros(batch, 1, SIZE, SIZE)
    pseudo[:, :, 10:30, 20:40] = torch.rand(batch, 3, 20, 20, generator=g)
    mask[:, :, 10:30, 20:40] = 1
    return {"image": image, "pseudo": pseudo, "mask": mask}


def _branch_maps(model, images):
    """The model's output on ``images`` and the calculator's evidence maps of it."""
    output = model(images)
    maps = model.calculator.branch_maps(
        images,
        output.reconstruction,
        output.features,
        output.reconstructed,
        model.knn_map(output.features, None),
    )
    return output, maps


def _prepared(model, images):
    """``model`` as the engine leaves it before the first epoch: prepared, then calibrated."""
    model.prepare([images])
    model.eval()
    with torch.no_grad():
        model.calibrate([images])
    return model


def _check_step(model, config):
    _prepared(model, _batch(seed=5)["image"])  # the patch memory, from other "training" images
    model.train()
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loss, parts = model.training_loss(_batch())
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert sum(float(p.grad.abs().sum()) for p in trainable) > 0
    assert all(p.grad is None for p in model.backbone.parameters())
    for key, value in model.backbone.state_dict().items():  # frozen, batch-norm statistics too
        assert torch.equal(value, backbone_before[key]), key
    model.eval()
    with torch.no_grad():
        anomaly_map, score = model.predict(_batch()["pseudo"])
    assert anomaly_map.shape == (2, 1, SIZE, SIZE) and score.shape == (2,)
    assert torch.isfinite(anomaly_map).all() and torch.isfinite(score).all()
    if config.pagmfr.anomaly.map_output == "sigmoid":
        assert torch.all((anomaly_map >= 0) & (anomaly_map <= 1))
    return parts


@pytest.mark.parametrize(
    ("layers", "fusion", "branches"),
    tiered(
        list(
            itertools.product(
                ["1,2,3", "2,3", "1,2,3,4"], ["concat", "add", "none"], ["feature", "image", "both"]
            )
        ),
        quick=[
            ("1,2,3", "concat", "both"),
            ("2,3", "none", "feature"),
            ("1,2,3,4", "add", "image"),
        ],
    ),
)
def test_every_switch_combination_trains(layers, fusion, branches):
    config = _config(
        **{
            "backbone.layers": layers,
            "fusion.mode": fusion,
            "anomaly.branches": branches,
            "anomaly.head_form": "residual",  # the head that reads the MFFM's fused features
        }
    )
    model = build_model(config)
    assert (model.fusion is None) == (fusion == "none")
    assert model.calculator.head is not None
    parts = _check_step(model, config)
    assert set(parts) == {"image_mse", "image_ssim", "feature", "focal"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone",
    ["efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet50", "wide_resnet50_2"],
)
def test_every_backbone_trains(backbone):
    """The ResNets with random weights: torchvision's are not on a machine without internet
    access, and tests never download."""
    weights = "imagenet" if backbone.startswith("efficientnet") else "none"
    config = _config(
        **{"backbone.name": backbone, "backbone.layers": "2,3", "backbone.weights": weights}
    )
    model = build_model(config)
    assert model.backbone.channels == list(BACKBONES[backbone].channels[1:3])
    _check_step(model, config)


@pytest.mark.parametrize("map_norm", ["global", "pixel"])
def test_without_pseudo_anomalies_the_map_is_the_mean_of_normalised_branch_maps(map_norm):
    config = _config(
        **{"generator.strategy": "none", "anomaly.smoothing_sigma": 0, "anomaly.map_norm": map_norm}
    )
    model = build_model(config)
    parts = _check_step(model, config)
    assert "focal" not in parts
    assert model.fusion is None and model.calculator.head is None
    calculator = model.calculator
    images = _batch()["pseudo"]
    with torch.no_grad():
        output, maps = _branch_maps(model, images)
        assert calculator.stats.per_pixel == (map_norm == "pixel")
        assert int(calculator.stats.updates) == 2  # fitted on the two "training" images
        std = (calculator.stats.square - calculator.stats.mean.pow(2)).sqrt()
        assert std.ne(1).all()
        normalised = calculator.normalise(maps)
    assert maps.shape[1] == 6  # 3 feature scales, CIELAB, SSIM, and the patch memory's map
    expected = normalised.mean(1, keepdim=True)
    torch.testing.assert_close(output.logits, expected)
    torch.testing.assert_close(output.anomaly_map, expected)  # the map is the logits


@pytest.mark.parametrize(
    "switches",
    [
        {"anomaly.knn": "true"},
        {"anomaly.map_norm": "pixel"},
        {"anomaly.head_init": "mean"},
        {"anomaly.map_output": "logits"},
        {"anomaly.head_form": "residual"},
        {"anomaly.head_form": "linear"},
        {"anomaly.head_form": "gated"},
        {"anomaly.map_fusion": "head"},
        {"mfrm.skips": "deepest"},
        {"loss.focal_alpha": "0.75"},
    ],
    ids=lambda switches: ",".join(f"{k}={v}" for k, v in switches.items()),
)
def test_every_quality_switch_trains_and_predicts(switches):
    config = _config(**switches)
    model = build_model(config)
    parts = _check_step(model, config)
    assert "focal" in parts
    if config.pagmfr.anomaly.head_form == "linear":
        assert model.fusion is None and model.calculator.head is None  # no MLP, no MFFM


@pytest.mark.parametrize("fusion", ["head+knn", "head"])
def test_the_map_keeps_the_patch_memorys_distances_beside_the_head(fusion):
    """head+knn: the map is the head's output plus the memory's z-scored distances; head: the
    head's output alone. The focal loss sees the head's output either way."""
    config = _config(**{"anomaly.smoothing_sigma": 0, "anomaly.map_fusion": fusion})
    model = _prepared(build_model(config), _batch(seed=5)["image"])
    images = _batch(seed=3)["image"]
    with torch.no_grad():
        output, maps = _branch_maps(model, images)
        head, normalised = model.calculator(maps, None)
    torch.testing.assert_close(output.logits, head)
    expected = head + normalised[:, -1:] if fusion == "head+knn" else head
    torch.testing.assert_close(output.anomaly_map, expected)


def test_the_untrained_head_is_the_evidence_and_map_statistics_hold_still_in_training():
    """head_init=evidence: before training the head's output is the patch memory's z-scored
    distances. The statistics are fitted on the clean training images (calibrate), each
    image's evidence leaving its own patches out, and no training step moves them."""
    model = _prepared(
        build_model(_config(**{"anomaly.smoothing_sigma": 0})), _batch(seed=5)["image"]
    )
    stats = model.calculator.stats
    train = _batch(seed=5)["image"]
    with torch.no_grad():
        features = model.backbone(train)
        reconstructed, reconstruction = model.reconstruction(features, train.shape[-2:])
        own = model.knn_map(features, torch.arange(2))
        maps = model.calculator.branch_maps(train, reconstruction, features, reconstructed, own)
    torch.testing.assert_close(stats.mean.flatten(), maps.mean(dim=(0, 2, 3)))
    with torch.no_grad():
        output, maps = _branch_maps(model, _batch(seed=3)["image"])
    bias = model.calculator.linear.bias.view(1, 1, 1, 1)  # the prior of a rare defect
    torch.testing.assert_close(output.logits - bias, model.calculator.normalise(maps)[:, -1:])
    before = {k: v.clone() for k, v in stats.state_dict().items()}
    model.train()
    model.training_loss(_batch())[0].backward()
    assert all(torch.equal(v, before[k]) for k, v in stats.state_dict().items())


def test_the_patch_memory_leaves_a_training_image_out_of_its_own_score(tmp_path):
    config = _config(
        **{"anomaly.knn": "true", "anomaly.knn_coreset": 1.0, "anomaly.smoothing_sigma": 0}
    )
    model = build_model(config).eval()
    images = _batch(seed=7, batch=3)["image"]
    model.prepare([images])
    with torch.no_grad():
        features = model.backbone(images)
        seen = model.knn_map(features, exclude=None)
        left_out = model.knn_map(features, exclude=torch.arange(3))
    # every patch is in memory (distance 0 up to float32 rounding); left out, each image is
    # scored against the other images only, as a test image is
    assert seen.max() < 0.1 * left_out.mean() and (left_out > seen).all()
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pt")  # the memory travels
    fresh = build_model(config, load_weights=False)
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"])
    torch.testing.assert_close(fresh.memory.bank, model.memory.bank)
    torch.testing.assert_close(fresh.memory.owner, model.memory.owner)


def test_a_patch_memory_branch_needs_its_layers_in_the_backbone():
    with pytest.raises(ValueError, match="anomaly.knn_layers must be among backbone.layers"):
        _config(**{"anomaly.knn": "true", "backbone.layers": "1,2", "anomaly.knn_layers": "2,3"})
    with pytest.raises(ValueError, match="anomaly.knn_layers must be increasing stages"):
        _config(**{"anomaly.knn_layers": "3,2"})  # the first stage sets the patches' grid


@pytest.mark.parametrize("size", [None, 4])
def test_map_statistics_fit_every_image_exactly_whatever_the_batches(size):
    maps = torch.rand(7, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 3 + 1
    stats = MapStats(2, size)
    stats.fit([torch.zeros(2, 2, 4, 4)])  # what came before is replaced, not blended
    stats.fit([maps[:5], maps[5:]])  # unequal batches weigh by image
    dims = (0,) if size else (0, 2, 3)
    mean, std = maps.mean(dim=dims), maps.std(dim=dims, unbiased=False)
    assert torch.allclose(stats.mean.squeeze(), mean.squeeze(), atol=1e-5)
    fitted = (stats.square - stats.mean.pow(2)).sqrt()
    assert torch.allclose(fitted.squeeze(), std.squeeze(), atol=1e-4)
    assert int(stats.updates) == 7


def test_top_k_scores():
    model = build_model(
        _config(
            **{
                "anomaly.score": "topk",
                "anomaly.topk": 10,
                "anomaly.smoothing_sigma": 0,
                "anomaly.score_sigma": 0,
            }
        )
    ).eval()
    model.prepare([_batch(seed=5)["image"]])
    with torch.no_grad():
        anomaly_map, score = model.predict(_batch()["pseudo"])
    expected = anomaly_map.flatten(1).topk(10, dim=1).values.mean(1)
    torch.testing.assert_close(score, expected)


def test_the_image_score_keeps_a_thin_peak_the_map_smoothing_spreads():
    thin = torch.zeros(1, 1, 32, 32)
    thin[0, 0, 16, 16] = 1.0
    smoothed, score = smooth_and_score(thin, ScoringSettings(smoothing_sigma=4.0, score_sigma=0.0))
    assert smoothed.max() < 0.02 and score.item() == 1.0
    same, blurred_score = smooth_and_score(
        thin, ScoringSettings(smoothing_sigma=4.0, score_sigma=4.0)
    )
    torch.testing.assert_close(same, smoothed)
    torch.testing.assert_close(blurred_score, smoothed.flatten(1).amax(1))


def test_backbone_weights_from_a_state_dict_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetFeatures("resnet18", (1, 2))
    load_backbone_weights(backbone, str(path))
    torch.testing.assert_close(backbone.net.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(
        backbone.net.layer2[0].conv1.weight, reference.layer2[0].conv1.weight
    )
    with pytest.raises(FileNotFoundError, match=r"backbone weights file not found: .*nope.pth"):
        load_backbone_weights(backbone, str(tmp_path / "nope.pth"))
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match=r"r50.pth: these weights do not fit resnet18"):
        load_backbone_weights(backbone, str(tmp_path / "r50.pth"))


def test_missing_imagenet_weights_say_how_to_prefetch():
    backbone = ResNetFeatures("resnet18", (1,))
    with pytest.raises(
        RuntimeError, match=r"ImageNet weights for resnet18 are not available .*pre-fetch"
    ):
        load_backbone_weights(backbone, "imagenet")


def test_cielab_difference_matches_scikit_image():
    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16, 3)), rng.random((16, 16, 3))
    expected = np.linalg.norm(rgb2lab(a) - rgb2lab(b), axis=2)
    to_tensor = lambda x: torch.from_numpy(x.transpose(2, 0, 1)[None]).float()  # noqa: E731
    np.testing.assert_allclose(
        lab_difference_map(to_tensor(a), to_tensor(b))[0, 0].numpy(), expected, atol=2e-3
    )


def test_ssim_map_is_one_for_identical_images_and_lower_otherwise():
    image = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(ssim_map(image, image), torch.ones(1, 1, 32, 32))
    assert ssim_map(image, torch.rand(1, 3, 32, 32)).mean() < 0.2


def test_a_checkpoint_of_the_earlier_map_is_refused_saying_to_retrain():
    """PAGMFR's map z-scored its head's output with statistics gathered during training
    (``calculator.fusion_stats``) until the map statistics moved to ``calibrate``: such a
    checkpoint's map cannot be made again, and loading it says so."""
    config = _config()
    state = build_model(config).state_dict()
    state["calculator.fusion_stats.mean"] = torch.zeros(2, 1, 1)
    saved = {**config.to_flat(), "anomaly.map_stats": "normal"}  # a retired key still loads
    with pytest.raises(ValueError, match=r"^old.pt: .* trained by PAGMFR before .* retrain it"):
        model_from_checkpoint({"model": state, "config": saved}, source="old.pt")
