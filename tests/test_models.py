import itertools

import numpy as np
import pytest
import torch
import torchvision
from conftest import tiered
from skimage.color import rgb2lab

from pagmfr.config import Config
from pagmfr.losses import lab_difference_map, ssim_map
from pagmfr.models import build_model
from pagmfr.models.backbone import ResNetFeatures, load_backbone_weights
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


def _check_step(model, config):
    model.prepare([_batch(seed=5)["image"]])  # the patch memory, from other "training" images
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
@pytest.mark.parametrize("backbone", ["resnet34", "resnet50", "wide_resnet50_2"])
def test_every_backbone_trains(backbone):
    config = _config(**{"backbone.name": backbone, "backbone.layers": "2,3"})
    model = build_model(config)
    assert model.backbone.channels == ([128, 256] if backbone == "resnet34" else [512, 1024])
    _check_step(model, config)


@pytest.mark.parametrize("map_norm", ["global", "pixel"])
def test_without_pseudo_anomalies_the_map_is_the_mean_of_normalised_branch_maps(map_norm):
    config = _config(
        **{
            "generator.strategy": "none",
            "anomaly.smoothing_sigma": 0,
            "anomaly.map_norm": map_norm,
            "anomaly.map_stats": "all",  # every sample of _batch() carries a mask
        }
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
        assert calculator.stats.updates > 0  # statistics were learned from training images
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
        {"anomaly.map_norm": "pixel", "anomaly.map_stats": "normal"},
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
    """head+knn: the map is the head's output plus the memory's distances, each z-scored with
    its mean and std on the normal training samples; head: the head's output alone."""
    # One normal sample's per-pixel statistics would z-score its own maps to 0: global ones
    config = _config(
        **{
            "anomaly.smoothing_sigma": 0,
            "anomaly.map_fusion": fusion,
            "anomaly.map_norm": "global",
        }
    )
    model = build_model(config)
    model.prepare([_batch(seed=5)["image"]])
    batch = _batch()
    batch["mask"][1] = 0  # the second sample stays normal: the statistics learn from it
    batch["pseudo"][1] = batch["image"][1]
    model.train()
    model.training_loss(batch)
    model.eval()
    images = _batch(seed=3)["image"]
    with torch.no_grad():
        output, maps = _branch_maps(model, images)
        calculator = model.calculator
        head = calculator(maps, None)
    if fusion == "head":
        assert calculator.fusion_stats is None
        torch.testing.assert_close(output.anomaly_map, head)
        return
    stats = calculator.fusion_stats
    assert int(stats.updates) == 1
    mean, std = stats.mean.view(2), (stats.square - stats.mean.pow(2)).sqrt().view(2)
    expected = (head - mean[0]) / std[0] + (maps[:, -1:] - mean[1]) / std[1]
    torch.testing.assert_close(output.anomaly_map, expected)
    torch.testing.assert_close(output.logits, head)  # the focal loss still sees the head alone


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
    stats.update(torch.zeros(2, 2, 4, 4))  # what came before is replaced, not blended
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
