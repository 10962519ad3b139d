"""Shared fixtures: the embedded dataset, written once per test session."""

from __future__ import annotations

import html
import os
import re
import shutil
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


#: An empty MLflow sqlite store, made by MLflow once per session (see :func:`fresh_store`).
EMPTY_STORE: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _empty_store_folder(tmp_path_factory: pytest.TempPathFactory):
    EMPTY_STORE.append(tmp_path_factory.mktemp("empty_store") / "mlflow.db")


def fresh_store(folder: Path, name: str = "mlflow.db") -> str:
    """The URI of a new MLflow sqlite store in ``folder`` (kept if it is there already): a copy
    of an empty store that MLflow created once this session. A store MLflow creates runs its
    schema migrations, about 1.5 s each time, and the suite uses dozens of stores."""
    template, target = EMPTY_STORE[0], folder / name
    if not template.exists():
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{template}").search_experiments()
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)
    return f"sqlite:///{target}"


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


def start_driver(command: list[str], env: dict[str, str], output: int = subprocess.PIPE):
    """A study driver as a subprocess in a session of its own (a test ends it, and every Ray
    process it started, by its process group); its output, merged, on a text pipe unless
    ``output`` is another target (``subprocess.DEVNULL`` for a driver nobody reads)."""
    return subprocess.Popen(
        command,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


#: The category of the tiny dataset the bad-input tests break.
TINY_CATEGORY = "coins"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 training and 5 test images of one category at 32 px (read-only: copy to break it)."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("tiny"),
        categories=[TINY_CATEGORY],
        image_size=32,
        n_train=5,
        n_test_good=2,
        n_test_per_defect=1,
    )


@pytest.fixture
def root(tmp_path: Path, tiny_dataset: Path) -> Path:
    """A private copy of the tiny dataset, for a case to break."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "data"))


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


def _tool(name: str, package: str) -> str:
    """A Debian tool the render and compile tests need: never skipped (CI installs it in
    .ci/run), a clear failure where it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (.ci/run does)")
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    return _tool("chromium", "chromium")


@pytest.fixture(scope="session")
def pdflatex() -> str:
    return _tool("pdflatex", "texlive-latex-recommended")


def render_dom(browser: str, url: str, profile: Path, budget_ms: int = 20_000) -> str:
    """The DOM of ``url`` after headless Chromium ran its scripts for ``budget_ms`` of virtual
    time (network waits do not count against it), with a fresh profile and no traffic of its
    own (no updates, sync or QUIC)."""
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1920,1080",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM, whitespace collapsed."""
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


def compile_latex(engine: str, folder: Path, inputs: list[str]) -> str:
    """A minimal article that \\input's each file, compiled in ``folder``; returns its log."""
    document = folder / "paper.tex"
    document.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage{graphicx}\n"
        "\\begin{document}\n"
        + "".join(f"\\input{{{name}}}\n" for name in inputs)
        + "\\end{document}\n"
    )
    result = subprocess.run(
        [engine, "-interaction=nonstopmode", "-halt-on-error", document.name],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
    )
    log = (folder / "paper.log").read_text(errors="replace")
    assert result.returncode == 0, log[-3000:]
    return log


def tiered(combinations: list[tuple], quick: list[tuple]) -> list:
    """Every combination for the full suite; the ones not in ``quick`` marked slow, so that
    ``pytest -m "not slow"`` still tries each value once, in seconds."""
    return [c if c in quick else pytest.param(*c, marks=pytest.mark.slow) for c in combinations]


_SESSION: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _SESSION["exitstatus"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with pytest's own exit status once every plugin has finished, skipping
    the interpreter's teardown: a native background thread left by the libraries under test
    (seen once after all 368 tests had passed, ip in freed heap) can segfault during
    finalisation and turn a passing run into a failed ``make test``."""
    if "exitstatus" in _SESSION:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION["exitstatus"])
