"""Studies refuse what cannot be meant before anything is scheduled: each case runs a study
script's command line in this process and checks its exit code and its one-line message. None
of them starts Ray; the driver lock is checked with real processes."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fresh_store

from pagmfr.data import make_synthetic_dataset
from pagmfr.study.cli import ablation_main, hpo_main
from pagmfr.study.driver_lock import driver_lock, hold_lock, lock_path
from pagmfr.study.options import StudyOptions

STUDIES = Path(__file__).resolve().parent.parent / "studies"
#: A process that holds a lock file for some seconds (argv: the file, the seconds).
HOLDER = """
import sys, time
from pathlib import Path
from pagmfr.study.driver_lock import hold_lock

with hold_lock(Path(sys.argv[1])):
    time.sleep(float(sys.argv[2]))
"""


def _script(name: str):
    """A study script's module (its variants or space, and its presets)."""
    spec = importlib.util.spec_from_file_location(f"{name}_study", STUDIES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Two categories at 32 px, a few images each: the data check passes in a moment."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("tiny"),
        categories=["brick", "coins"],
        image_size=32,
        n_train=5,
        n_test_good=2,
        n_test_per_defect=1,
    )


@pytest.fixture
def study(tmp_path, capsys):
    """``study("ablation" | "hpo", *argv)``: a smoke study script's exit code and output, its
    MLflow store and storage in ``tmp_path``."""
    scripts = {"ablation": _script("ablation"), "hpo": _script("hpo")}

    def run(which: str, *argv: str) -> tuple[int, str]:
        where = ["--storage-path", str(tmp_path / "runs")]
        if "--tracking-uri" not in argv:
            where += ["--tracking-uri", fresh_store(tmp_path)]
        module = scripts[which]
        declared = module.VARIANTS if which == "ablation" else module.space
        main = ablation_main if which == "ablation" else hpo_main
        code = main(declared, module.PRESETS, "", [*where, *argv])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def _error_line(output: str) -> str:
    """The one error line a refused study prints."""
    (line,) = [line for line in output.splitlines() if line.startswith("pagmfr: error:")]
    return line


@pytest.mark.parametrize("which", ["ablation", "hpo"])
def test_negative_max_failures_is_refused_naming_the_option(study, which):
    code, output = study(which, "--max-failures", "-5")
    assert code == 2
    assert _error_line(output) == (
        "pagmfr: error: --max-failures -5: must be 0 or more (the retries of a failing trial; "
        "0: none)"
    )
    with pytest.raises(ValueError, match="--max-failures -1: must be 0 or more"):
        StudyOptions("direct", max_failures=-1)


@pytest.mark.parametrize("trials", ["0", "-3"])
def test_a_trial_budget_below_one_is_refused_not_read_as_the_presets(study, trials):
    code, output = study("hpo", "--trials", trials)
    assert code == 2
    assert _error_line(output) == (
        f"pagmfr: error: --trials {trials}: must be at least 1 (leave it out for the preset's)"
    )


@pytest.mark.parametrize("metric", ["val_foo", "test_au_pro", "au_pro", "val_au_pro/brick"])
def test_a_metric_the_trials_do_not_report_is_refused_listing_those_they_do(study, metric):
    code, output = study("hpo", "--metric", metric)
    assert code == 2
    assert _error_line(output) == (
        f"pagmfr: error: --metric {metric}: HPO optimises a validation metric the trials "
        "report, one of val_image_auroc, val_pixel_auroc, val_au_pro, val_pixel_f1_max (never "
        "a test metric)"
    )


def test_a_search_whose_trials_would_choose_epochs_on_the_test_split_is_refused(study):
    code, output = study("hpo", "--set", "validation.select=test_au_pro")
    assert code == 2
    assert _error_line(output) == (
        "pagmfr: error: validation.select=test_au_pro: HPO must not choose epochs on the test "
        "split; set validation.select to a val_* metric or last"
    )


def test_repeated_seeds_and_categories_make_each_cell_once(study, tiny_data):
    argv = ["--variants", "full-model", "--seeds", "0", "0", "--categories", "brick", "brick"]
    code, output = study("ablation", "--dry-run", "--data", str(tiny_data), *argv)
    assert code == 0, output
    assert "note: categories brick named more than once: each used once" in output
    assert "note: seeds 0 named more than once: each used once" in output
    assert "1 cells: 1 variants x 1 categories x 1 seeds" in output
    assert output.count("full model / brick / seed 0") == 1, output


def test_repeated_search_categories_are_searched_once(study):
    code, output = study("hpo", "--categories", "brick", "coins", "brick", "--grace-period", "99")
    assert code == 2 and "--grace-period 99: must be between 1" in _error_line(output)
    assert "note: categories brick named more than once: each used once" in output
    assert "the HPO objective is val_au_pro on one category" not in output  # two remain
    code, output = study("hpo", "--categories", "brick", "brick", "--grace-period", "99")
    assert "the HPO objective is val_au_pro on one category (brick)" in output


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("which", ["ablation", "hpo"])
def test_an_unreachable_tracking_server_fails_in_seconds_naming_it(study, tmp_path, which):
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    code, output = study(which, "--tracking-uri", uri)
    assert time.monotonic() - started < 15  # MLflow's own client retries for minutes
    assert code == 2
    assert re.fullmatch(
        rf"pagmfr: error: cannot reach the MLflow tracking server at {re.escape(uri)} \(.*"
        r"refused.*\); is `mlflow server` running there\?",
        _error_line(output),
    ), output
    assert not (tmp_path / "runs").exists()  # nothing scheduled, nothing written


def _start_holder(path: Path, seconds: float) -> subprocess.Popen:
    """A process holding the lock file ``path`` for ``seconds``, once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)])
    deadline = time.monotonic() + 60
    while f"pid {holder.pid} " not in (path.read_text() if path.exists() else ""):
        assert holder.poll() is None and time.monotonic() < deadline, "the holder never locked"
        time.sleep(0.05)
    return holder


def test_a_second_driver_waits_for_the_first_saying_who_it_is(tmp_path, capsys):
    path = tmp_path / "study" / "driver.lock"
    holder = _start_holder(path, 2.0)
    try:
        started = time.monotonic()
        with hold_lock(path, poll=0.05, repeat=0.5):
            waited = time.monotonic() - started
            assert f"pid {os.getpid()} " in path.read_text()
        holder.wait(timeout=30)
    finally:
        holder.kill()
    assert 1.5 < waited < 30  # until the first driver was done (it held the lock 2 s)
    said = capsys.readouterr().err
    waiting = [line for line in said.splitlines() if line.startswith("waiting for driver pid")]
    assert len(waiting) >= 2, said  # said again while it waits
    assert re.match(rf"waiting for driver pid {holder.pid} on \S+ since \d{{4}}-", waiting[0])
    assert path.read_text() == ""  # released: no stale holder named


def test_a_killed_driver_leaves_no_lock_behind(tmp_path):
    path = tmp_path / "study" / "driver.lock"
    holder = _start_holder(path, 120.0)
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        started = time.monotonic()
        with hold_lock(path, poll=0.05):
            assert time.monotonic() - started < 5
    finally:
        holder.kill()


@pytest.mark.parametrize(
    ("which", "module", "body"),
    [
        ("ablation", "pagmfr.study.ablation", "_run_cells"),
        ("hpo", "pagmfr.study.search", "_search"),
    ],
)
def test_both_studies_run_under_the_driver_lock(
    study, tmp_path, tiny_data, monkeypatch, which, module, body
):
    """What a study does after its checks waits for another driver of the same study."""
    path = lock_path(StudyOptions(f"{which}-smoke", storage_path=str(tmp_path / "runs")))
    ran = []

    def run_body(*args):
        ran.append(time.monotonic() - started)
        raise ValueError("the study ran")

    monkeypatch.setattr(f"{module}.{body}", run_body)
    holder = _start_holder(path, 2.0)
    try:
        started = time.monotonic()
        code, output = study(which, "--data", str(tiny_data))
        holder.wait(timeout=30)
    finally:
        holder.kill()
    assert code == 2 and _error_line(output) == "pagmfr: error: the study ran"
    assert len(ran) == 1 and ran[0] > 1.5, output  # once, after the other driver's 2 s
    assert f"waiting for driver pid {holder.pid} on " in output


def test_with_s3_storage_the_lock_covers_this_machine_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    options = StudyOptions("remote", storage_path="s3://bucket/runs")
    with driver_lock(options):
        assert lock_path(options) == tmp_path / "pagmfr-cells" / "remote" / "driver.lock"
    assert "the driver lock is in" in capsys.readouterr().err
