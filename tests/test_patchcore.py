import math

import numpy as np
import pytest
import torch

import pagmfr
from pagmfr.config import Config
from pagmfr.data import MVTecAD, make_synthetic_dataset
from pagmfr.engine import load_checkpoint
from pagmfr.metrics import image_auroc, pixel_auroc
from pagmfr.models import ResNetFeatures
from pagmfr.models.coreset import _kernel, greedy_coreset, random_projection, start_index
from pagmfr.models.patchcore import (
    PatchCore,
    PatchCoreSettings,
    local_patch_features,
    reweighted_scores,
)
from pagmfr.study.presets import QUICK_TRAINING

SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine's cores are shared: one torch thread keeps these tests fast and steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plain_greedy(features: torch.Tensor, count: int, start: int) -> list[int]:
    """The textbook loop: one full pass per centre, torch's first-index argmax."""
    chosen = [start]
    nearest = torch.linalg.norm(features - features[start], dim=1)
    for _ in range(count - 1):
        chosen.append(int(torch.argmax(nearest)))
        nearest = torch.minimum(nearest, torch.linalg.norm(features - features[chosen[-1]], dim=1))
    return chosen[:count]


def _random_points(seed: int) -> torch.Tensor:
    """Varied shapes and scales; every third set is full of duplicates, every third rounded to
    a coarse grid (both make ties at the maximum)."""
    g = torch.Generator().manual_seed(seed)
    total = int(torch.randint(1, 700, (1,), generator=g))
    dim = int(torch.randint(1, 40, (1,), generator=g))
    points = torch.randn(total, dim, generator=g) * float(torch.rand(1, generator=g) * 10) + 3
    if seed % 3 == 0:
        points = points[torch.randint(0, max(1, total // 4), (total,), generator=g)]
    elif seed % 3 == 1:
        points = torch.round(points * 2) / 2
    return points


def _manifold(total: int, dim: int, seed: int) -> torch.Tensor:
    """Points near a 3-dimensional surface in ``dim`` dimensions: structured like CNN patch
    features, so most distance passes can be pruned."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.rand(total, 3, generator=g)
    lift = torch.randn(3, dim, generator=g)
    return torch.sin(latent @ lift * 2) + 0.01 * torch.randn(total, dim, generator=g)


@pytest.mark.parametrize("seed", range(12))
def test_coreset_equals_the_plain_greedy_loop_including_ties(seed):
    points = _random_points(seed)
    g = torch.Generator().manual_seed(100 + seed)
    count = int(torch.randint(0, len(points) + 1, (1,), generator=g))
    start = int(torch.randint(0, len(points), (1,), generator=g))
    expected = plain_greedy(points, count, start) if count else []
    assert greedy_coreset(points, count, start=start).tolist() == expected


def test_coreset_prunes_structured_features_and_stays_exact(monkeypatch):
    points = _manifold(4000, 24, seed=0)
    expected = plain_greedy(points, 400, start_index(len(points), seed=3))
    rows = []
    norm = torch.linalg.vector_norm

    def counting_norm(x, *args, **kwargs):
        rows.append(x.shape[0])
        return norm(x, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "vector_norm", counting_norm)
    assert greedy_coreset(points, 400, seed=3).tolist() == expected
    assert sum(rows) < 0.25 * 400 * len(points)  # measured 13% of the plain loop's rows


def test_coreset_on_projected_float64_features_and_duplicated_rows():
    base = _manifold(1500, 32, seed=1)
    points = random_projection(torch.cat([base, base[:500]]).double(), 8, seed=0)
    start = start_index(len(points), seed=0)
    assert greedy_coreset(points, 1200, seed=0).tolist() == plain_greedy(points, 1200, start)


def test_distance_kernel_of_a_subset_equals_the_full_pass():
    # greedy_coreset's exactness rests on this: a row's float32 norm is independent of the
    # other rows in the call.
    points = torch.randn(5000, 128, generator=torch.Generator().manual_seed(0)) * 4
    centre = points[7]
    subset = torch.randperm(5000, generator=torch.Generator().manual_seed(1))[:300]
    full = torch.linalg.norm(points - centre, ord=2, dim=1, keepdim=True)[:, 0]
    assert torch.equal(_kernel(points[subset], centre), full[subset])


def test_coreset_rejects_bad_arguments():
    points = torch.zeros(10, 3)
    with pytest.raises(ValueError, match="count must be in"):
        greedy_coreset(points, 11)
    with pytest.raises(ValueError, match="float32 or float64"):
        greedy_coreset(points.half(), 2)
    with pytest.raises(ValueError, match="start must be in"):
        greedy_coreset(points, 2, start=10)


def test_eq7_reweighting_by_hand():
    # m_test = 0, m* = 1 (distance 1), the rest of N_b(m*) at distances 3 and 2.
    test, nearest = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    neighbours = torch.tensor([[[3.0], [-2.0]]])
    weight = 1 - math.exp(1) / (math.exp(1) + math.exp(3) + math.exp(2))
    score = reweighted_scores(test, nearest, neighbours, torch.tensor([1.0]))
    assert score.item() == pytest.approx(weight)
    far = reweighted_scores(test + 1000, nearest + 1000, neighbours + 1000, torch.tensor([1.0]))
    assert far.item() == pytest.approx(weight)  # the softmax form cannot overflow


def _patchcore(**kwargs) -> PatchCore:
    torch.manual_seed(kwargs.pop("weights_seed", 0))
    return PatchCore(ResNetFeatures("resnet18", (2, 3)), PatchCoreSettings(**kwargs))


def test_image_score_uses_the_worst_patch_and_its_bank_neighbourhood():
    model = _patchcore(neighbours=3)
    model.memory_bank = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    patches = torch.tensor([[1.2], [6.0]])  # nearest: 1 (0.2) and 3 (3.0): the worst is 6
    distance, nearest = model.nearest_bank_entries(patches)
    assert nearest.tolist() == [1, 2] and distance.tolist() == pytest.approx([0.2, 3.0], abs=1e-5)
    score = model.image_scores(patches[None], distance[None], nearest[None])
    # N_3(m* = 3) = {3, 1, 0}; their distances to the worst patch: 3, 5, 6.
    weight = 1 - math.exp(3) / (math.exp(3) + math.exp(5) + math.exp(6))
    assert score.item() == pytest.approx(weight * 3.0, rel=1e-5)
    model.settings.neighbours = 1
    assert model.image_scores(patches[None], distance[None], nearest[None]).item() == (
        pytest.approx(3.0, rel=1e-5)
    )


def _images(seed: int, count: int = 4) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_patch_features_aggregate_and_concatenate_stages():
    model = _patchcore()
    stages = model.backbone(_images(0, 2))
    features = local_patch_features(stages)
    assert features.shape == (2, 128 + 256, SIZE // 8, SIZE // 8)
    # the first stage's part is its zero-padded 3x3 average
    inner = stages[0][:, :, :3, :3].mean(dim=(2, 3))
    assert torch.allclose(features[:, :128, 1, 1], inner, atol=1e-5)
    corner = stages[0][:, :, :2, :2].sum(dim=(2, 3)) / 9  # zero padding counts at the border
    assert torch.allclose(features[:, :128, 0, 0], corner, atol=1e-5)
    assert local_patch_features(stages, embedding_dim=100).shape == (2, 100, SIZE // 8, SIZE // 8)


def test_bank_respects_the_memory_bound_and_is_a_prefix_of_the_greedy_order():
    batches = [_images(1)]
    free = _patchcore(coreset_ratio=0.5)
    free.prepare(batches)
    bound_mb = 40 * 384 * 4 / 2**20  # room for exactly 40 features
    capped = _patchcore(coreset_ratio=0.5, max_bank_mb=bound_mb)
    capped.prepare(batches)
    assert free.bank_size == 128  # half of 4 x 8 x 8 patches
    assert capped.memory_bank.numel() * 4 <= bound_mb * 2**20 and capped.bank_size == 40
    assert torch.equal(capped.memory_bank, free.memory_bank[:40])
    with pytest.raises(ValueError, match="cannot hold one"):
        _patchcore(max_bank_mb=1e-6).prepare(batches)


def test_bank_survives_a_state_dict_round_trip_into_a_fresh_module():
    model = _patchcore(coreset_ratio=0.25)
    model.prepare([_images(3), _images(4)])
    restored = _patchcore(coreset_ratio=0.25, weights_seed=1)
    assert restored.bank_size == 0
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.memory_bank, model.memory_bank)
    maps, scores = model.predict(_images(5))
    maps_restored, scores_restored = restored.predict(_images(5))
    assert maps.shape == (4, 1, SIZE, SIZE) and scores.shape == (4,)
    assert torch.equal(maps, maps_restored) and torch.equal(scores, scores_restored)


def test_predict_needs_a_bank():
    with pytest.raises(RuntimeError, match="memory bank is empty"):
        _patchcore().predict(_images(0))


def test_patchcore_detects_anomalies_on_the_embedded_dataset(tmp_path):
    # Measured (embedded brick drawn at 64 px, random ResNet-18 weights, seed 0, its test
    # family of contamination, cracks and missing pieces): image AUROC 0.733, pixel AUROC
    # 0.722. ImageNet weights would do far better; none are fetched here.
    root = make_synthetic_dataset(tmp_path, ["brick"], image_size=SIZE)
    train, test = (MVTecAD(root, "brick", split, SIZE) for split in ("train", "test"))
    model = _patchcore()
    model.prepare(torch.stack([train[i]["image"] for i in range(len(train))]).split(16))
    items = [test[i] for i in range(len(test))]
    maps, scores = model.predict(torch.stack([item["image"] for item in items]))
    masks = np.stack([np.asarray(item["mask"]).reshape(SIZE, SIZE) > 0.5 for item in items])
    labels = np.array([int(item["label"]) for item in items])
    assert image_auroc(scores, labels) > 0.65
    assert pixel_auroc(maps[:, 0], masks) > 0.65


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"patch_size must be odd"):
        _patchcore(patch_size=2)
    with pytest.raises(ValueError, match=r"patchcore.coreset_ratio must be in \(0, 1\]; got 0.0"):
        Config().with_overrides({"patchcore.coreset_ratio": 0})


@pytest.mark.slow
def test_patchcore_through_the_engine_is_fitted_once_and_its_checkpoint_holds_the_bank(tmp_path):
    config = Config().with_overrides(
        {**QUICK_TRAINING, "method": "patchcore", "data.category": "brick", "train.epochs": 600}
    )
    assert config.patchcore.layers == (2, 3)  # its own stages, not the base config's 1-3
    metrics = pagmfr.train(config, tmp_path, callbacks=())
    assert [h["epoch"] for h in metrics["history"]] == [0]  # training-free: one pass
    assert "val_au_pro" in metrics["history"][0] and "loss" not in metrics["history"][0]
    best = load_checkpoint(tmp_path / "checkpoints" / "patchcore_brick_best.pt")
    assert best["model"]["memory_bank"].shape[1] == 40 + 112  # EfficientNet-Lite0's stages 2, 3
    again = pagmfr.evaluate(tmp_path / "checkpoints" / "patchcore_brick_best.pt")
    assert again["image_auroc"] == metrics["image_auroc"] > 0.6
