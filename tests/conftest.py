"""Shared fixtures: the embedded dataset, written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pagmfr.data import make_synthetic_dataset
from pagmfr.data.cache import IMAGE_CACHE


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded dataset at its default size (read-only for tests)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """The embedded dataset behind ``data.root = "synthetic"`` goes to a per-session cache."""
    os.environ["PAGMFR_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 turns token auth on by default
    os.environ.setdefault("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


@pytest.fixture(autouse=True)
def _fresh_image_cache():
    IMAGE_CACHE.clear()
    yield
    IMAGE_CACHE.clear()


@pytest.fixture
def quick_train_args():
    """``pagmfr train`` arguments for a 1-epoch, 64 px run on the embedded data."""

    def args(category: str, out: Path, *extra: str) -> list[str]:
        return [
            "train",
            "--data",
            "synthetic",
            "--category",
            category,
            "--image-size",
            "64",
            "--epochs",
            "1",
            "--weights",
            "none",
            "--out",
            str(out),
            *extra,
        ]

    return args
