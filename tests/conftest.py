"""Shared fixtures: the embedded dataset, written once per test session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pagmfr.data import make_synthetic_dataset
from pagmfr.data.cache import IMAGE_CACHE
from pagmfr.study.presets import QUICK_TRAINING


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded dataset at its default size (read-only for tests)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """The embedded dataset behind ``data.root = "synthetic"`` goes to a per-session cache."""
    os.environ["PAGMFR_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 turns token auth on by default
    # A study started without a cluster address starts its own Ray on loopback: never the
    # cluster another test (or person) started on this machine, which Ray would otherwise join.
    os.environ["RAY_ADDRESS"] = "local"
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
        quick = [f"--set={key}={value}" for key, value in QUICK_TRAINING.items()]
        return ["train", "--data", "synthetic", "--category", category, "--epochs", "1"] + [
            *quick,
            "--out",
            str(out),
            *extra,
        ]

    return args


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite store; restartable on the same port
    and store, to simulate an outage."""

    def __init__(self, folder: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder = folder
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout: float = 90) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'server.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.kill()


def smoke_study_command(name: str, tracking_uri: str, storage: Path, *extra: str) -> list[str]:
    """``studies/ablation.py --preset smoke`` as a subprocess command (a driver to kill)."""
    script = Path(__file__).resolve().parent.parent / "studies" / "ablation.py"
    return [
        sys.executable,
        str(script),
        "--preset",
        "smoke",
        "--name",
        name,
        "--tracking-uri",
        tracking_uri,
        "--storage-path",
        str(storage),
        *extra,
    ]


def tiered(combinations: list[tuple], quick: list[tuple]) -> list:
    """Every combination for the full suite; the ones not in ``quick`` marked slow, so that
    ``pytest -m "not slow"`` still tries each value once, in seconds."""
    return [c if c in quick else pytest.param(*c, marks=pytest.mark.slow) for c in combinations]
