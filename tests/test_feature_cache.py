"""The frozen backbone's work done once per run: one pass per batch over the images no epoch
encoded before, within the cache's memory bound, with the numbers of an uncached run."""

from __future__ import annotations

import pytest
import torch

from pagmfr.config import Config
from pagmfr.engine import start_fit
from pagmfr.models.feature_cache import FeatureCache, rows_through_cache
from pagmfr.study.presets import QUICK_TRAINING

CPU = torch.device("cpu")


class Doubler:
    """``compute`` for rows_through_cache: each row's values doubled, every call recorded."""

    def __init__(self, values: torch.Tensor):
        self.values, self.calls = values, []

    def __call__(self, rows: list[int]) -> list[torch.Tensor]:
        self.calls.append(list(rows))
        return [2 * self.values[rows], -self.values[rows]]


def test_rows_are_computed_once_per_key_and_kept_within_the_bound():
    values = torch.arange(12.0).view(6, 2)
    cache = FeatureCache(max_mb=2 * 2 * 4 * 2 / 2**20)  # room for two rows of two parts
    first = Doubler(values)
    # rows 0 and 3 share key 7 (an image and its unaltered copy); -1 rows are always computed
    keys = [7, 8, -1, 7, 9, -1]
    parts = rows_through_cache(cache, "f", keys, first, CPU)
    assert first.calls == [[0, 1, 2, 4, 5]]  # one call, key 7 once
    expected = [2 * values, -values]
    expected[0][3], expected[1][3] = 2 * values[0], -values[0]  # row 3 is key 7's row
    for got, want in zip(parts, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert cache.count("f") == 2 and cache.get(("f", 9)) is None  # the bound: keys 7 and 8 only
    again = Doubler(values)
    rows_through_cache(cache, "f", keys, again, CPU)
    assert again.calls == [[2, 4, 5]]  # cached keys are not computed again, the rest is
    assert rows_through_cache(None, "f", [3, 3], Doubler(values), CPU)[0].shape == (2, 2)


def test_cached_rows_keep_their_type_unless_the_caller_names_one():
    """Patch-memory distances are float32 even under autocast (bfloat16 would swamp them):
    read back, they stay float32; backbone features come back in the autocast type."""
    values = torch.tensor([[1.2345678]])
    cache = FeatureCache(max_mb=1)
    with torch.autocast("cpu", torch.bfloat16):
        rows_through_cache(cache, "d", [0], lambda rows: [values[rows]], CPU)
        kept = rows_through_cache(cache, "d", [0], lambda rows: [values[rows]], CPU)[0]
        rounded = rows_through_cache(cache, "d", [0], None, CPU, torch.bfloat16)[0]
    assert kept.dtype == torch.float32 and kept.item() == values.item()
    assert rounded.dtype == torch.bfloat16


def _run(tmp_path, **overrides):
    config = Config().with_overrides(
        {**QUICK_TRAINING, "data.category": "coffee", "train.epochs": 2, **overrides}
    )
    return start_fit(config, tmp_path, resume=False)


def _rows_per_pass(run, epoch: int) -> list[int]:
    """The number of images in each backbone pass of a training epoch."""
    seen = []
    handle = run.model.backbone.register_forward_hook(
        lambda module, args, output: seen.append(args[0].shape[0])
    )
    run.train_epoch(epoch)
    handle.remove()
    return seen


def test_one_backbone_pass_per_batch_over_what_no_epoch_encoded(tmp_path):
    run = _run(tmp_path)
    cache = run.model.feature_cache
    images = len(run.setup.train_set)
    assert cache.count("features") == images  # from prepare
    batches = len(run._loader(0))
    passes = _rows_per_pass(run, 0)
    assert len(passes) <= batches  # at most one pass per batch (none when nothing is new)
    # only the altered pseudo-anomalous images are new: about half of each batch
    assert 0 < sum(passes) < 0.8 * 8 * batches


def test_a_cached_run_gives_the_numbers_of_an_uncached_one(tmp_path):
    cached, uncached = _run(tmp_path / "a"), _run(tmp_path / "b", **{"train.feature_cache_mb": 0})
    assert uncached.model.feature_cache is None
    for run in (cached, uncached):
        for epoch in range(2):
            run.step(epoch)
    for a, b in zip(cached.history, uncached.history, strict=True):
        for key in ("loss", "val_au_pro", "val_image_auroc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


def test_beyond_its_bound_the_cache_recomputes(tmp_path):
    run = _run(tmp_path, **{"train.feature_cache_mb": 0.05})  # a few 64 px images' features
    cache = run.model.feature_cache
    assert 0 < cache.count("features") < len(run.setup.train_set)
    assert cache.used_bytes <= cache.max_bytes
    passes = _rows_per_pass(run, 0)
    assert sum(passes) > 0.5 * len(run.setup.train_set)  # clean images it could not hold
