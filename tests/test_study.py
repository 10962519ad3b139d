"""The study harness on a real local Ray, a real MLflow store and a real `mlflow server`."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import ray
from conftest import fresh_store, page_text, render_dom, smoke_study_command, start_driver

from pagmfr.config import Config
from pagmfr.data.pipeline import resolve_data_root
from pagmfr.provenance import PACKAGE_DIR
from pagmfr.report import report_study
from pagmfr.study import (
    StudyGrid,
    StudyOptions,
    load_best_config,
    run_ablation,
    run_hpo,
    start_local_ray,
)
from pagmfr.study.presets import SMOKE_TRAINING as QUICK
from pagmfr.study.status import study_status

pytestmark = [pytest.mark.slow, pytest.mark.integration]

METRICS = ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max", "val_au_pro")
VARIANTS = {"full model": {}, "w/o MFFM": {"fusion.mode": "none"}}
#: A study script run as a subprocess starts its own Ray: without an address it would join
#: any cluster that `ray start` left on this machine (another test's, on a shared machine).
OWN_RAY = {**os.environ, "RAY_ADDRESS": "local"}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def joined_ray(local_ray) -> dict[str, str]:
    """The environment of a study driver that joins this module's Ray, as a driver joins a
    cluster: tests that stop and restart drivers save each one's Ray start and stop (~6 s); the
    code-change test keeps a driver's own Ray (``OWN_RAY``)."""
    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}


def _options(tmp_path, name="smoke", uri=None, **kwargs):
    uri = uri or fresh_store(tmp_path)
    return StudyOptions(
        name=name, tracking_uri=uri, storage_path=str(tmp_path / "runs"), verbose=0, **kwargs
    )


def _cell_runs(uri, study):
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[study])
    return runs[runs["tags.role"] == "cell"]


def test_smoke_ablation_records_one_finished_run_per_cell_and_is_idempotent(tmp_path):
    options = _options(tmp_path)
    base = Config().with_overrides(QUICK)
    summary = run_ablation(StudyGrid(base, VARIANTS, ["brick", "coins"], [0]), options)
    assert (summary.cells, summary.trained, summary.failed) == (4, 4, [])
    runs = _cell_runs(options.tracking_uri, "smoke")
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert runs["tags.cell_key"].is_unique
    assert set(zip(runs["tags.variant"], runs["tags.category"], strict=True)) == {
        (v, c) for v in VARIANTS for c in ("brick", "coins")
    }
    assert set(runs["tags.method"]) == {"pagmfr"} and set(runs["tags.seed"]) == {"0"}
    # How the test measured, for the protocol line under every table.
    image_size = base.data.image_size
    assert set(runs["tags.test.resolution"]) == {f"{image_size}px"}
    assert set(runs["tags.test.au_pro_fpr_limit"]) == {"0.3"}
    for metric in (
        "image_auroc",
        "pixel_auroc",
        "au_pro",
        "pixel_f1_max",
        "val_au_pro",
        "peak_memory_mb",
    ):
        assert runs[f"metrics.{metric}"].notna().all(), metric
    assert set(runs["params.fusion.mode"]) == {"concat", "none"}
    client = mlflow.tracking.MlflowClient(options.tracking_uri)
    run_id = runs.iloc[0]["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "val_au_pro")] == [0, 1]
    assert {a.path for a in client.list_artifacts(run_id)} == {"heatmaps", "metrics.json"}
    _assert_browsable(client, runs, "smoke")

    again = run_ablation(StudyGrid(base, VARIANTS, ["brick", "coins"], [0]), options)
    assert (again.already_finished, again.trained) == (4, 0)
    assert len(_cell_runs(options.tracking_uri, "smoke")) == 4


def _assert_browsable(client, runs, study):
    """The records a person browses: readable names, what each variant changes, and on the
    study run the grid, the aggregate metrics per variant and the report."""
    experiment = client.get_experiment_by_name(study)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "tags.role = 'cell'" in experiment.tags["mlflow.sharedViewState.pagmfr-cells"]
    assert set(runs["tags.mlflow.runName"]) == {
        f"{v} / {c} / seed 0" for v in VARIANTS for c in ("brick", "coins")
    }
    overrides = dict(zip(runs["tags.variant"], runs["tags.overrides"], strict=True))
    assert overrides == {"full model": "(base config)", "w/o MFFM": "fusion.mode=none"}
    assert "tags.mlflow.parentRunId" not in runs or runs["tags.mlflow.parentRunId"].isna().all()
    study_run = client.search_runs([experiment.experiment_id], "tags.role = 'study'")[0]
    assert study_run.data.tags["grid"] == "2 variants x 2 categories x 1 seeds"
    for variant in VARIANTS:
        mine = runs[runs["tags.variant"] == variant]
        expected = mine["metrics.au_pro"].mean()
        assert study_run.data.metrics[f"au_pro/{variant.replace('/', '_')}"] == pytest.approx(
            expected
        )
    report = {a.path for a in client.list_artifacts(study_run.info.run_id, "report")}
    assert {"report/report.html", "report/components.tex", "report/components.csv"} <= report


def test_a_cell_with_a_bad_image_fails_alone_with_its_real_cause(tmp_path):
    """Broken data stops a study before anything is scheduled (tests/test_bad_inputs.py); a
    bad image a cell reads itself (its variant's texture folder) fails that cell alone, and
    MLflow shows the real cause and path, not Ray's TypeError over an unpicklable error."""
    textures = tmp_path / "textures"
    shutil.copytree(resolve_data_root("synthetic") / "brick" / "train" / "good", textures)
    (textures / "005.png").write_bytes(b"truncated")
    options = _options(tmp_path, name="broken", max_failures=0)
    base = Config().with_overrides({**QUICK, "train.epochs": 1})
    variants = {"full model": {}, "own textures": {"generator.texture_dir": str(textures)}}
    summary = run_ablation(StudyGrid(base, variants, ["brick"], [0]), options)
    assert summary.failed == ["own textures / brick / seed 0"] and summary.trained == 1
    runs = _cell_runs(options.tracking_uri, "broken").set_index("tags.variant")
    assert runs.loc["full model", "status"] == "FINISHED"
    assert runs.loc["own textures", "status"] == "FAILED"
    cause = runs.loc["own textures", "tags.error"].strip().splitlines()[-1]  # what reports show
    assert cause.endswith(
        f"ImageReadError: {textures / '005.png'}: not a readable image (empty, "
        "truncated or not an image file); replace it with a valid PNG"
    )
    # `pagmfr study status`, reading $MLFLOW_TRACKING_URI as every pagmfr command does
    status = subprocess.run(
        [sys.executable, "-m", "pagmfr.cli", "study", "status", "broken"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": options.tracking_uri},
    )
    assert status.returncode == 0, status.stderr
    assert "2 cells: 1 finished, 0 running, 1 failed" in status.stdout
    assert f"FAILED       own textures / brick / seed 0: {cause.strip()}" in status.stdout
    assert "own textures" in status.stdout and "!0/1" in status.stdout


def test_a_cell_trained_twice_through_the_study_path_gives_identical_metrics(tmp_path):
    """Two studies, separate storage and stores, the same cell: the same numbers (CPU)."""
    base = Config().with_overrides({**QUICK, "train.epochs": 1})
    measured = []
    for attempt in ("first", "second"):
        (tmp_path / attempt).mkdir()
        options = _options(tmp_path / attempt, name=f"twice-{attempt}")
        assert (
            run_ablation(StudyGrid(base, {"full model": {}}, ["coins"], [0]), options).trained == 1
        )
        runs = _cell_runs(options.tracking_uri, f"twice-{attempt}")
        measured.append(runs[[f"metrics.{m}" for m in METRICS]].iloc[0].to_dict())
    assert measured[0] == measured[1]


def test_recording_to_a_real_mlflow_server_and_browsing_it_in_chromium(
    tmp_path, mlflow_server, chromium
):
    uri = mlflow_server.uri
    options = _options(tmp_path, name="served", uri=uri)
    base = Config().with_overrides({**QUICK, "train.epochs": 1})
    summary = run_ablation(StudyGrid(base, {"full model": {}}, ["coins"], [0]), options)
    assert summary.trained == 1
    runs = _cell_runs(uri, "served")
    assert list(runs["status"]) == ["FINISHED"] and runs["metrics.au_pro"].notna().all()
    status = study_status(uri, "served")  # from the server, as a laptop would
    assert [(c.name, c.state) for c in status.cells] == [
        ("full model / coins / seed 0", "finished")
    ]
    assert status.cells[0].metrics["au_pro"] == pytest.approx(runs.iloc[0]["metrics.au_pro"])
    client = mlflow.tracking.MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(runs.iloc[0]["run_id"])} == {
        "heatmaps",
        "metrics.json",
    }
    # The link the study prints opens MLflow's UI on the runs table: the cell's run, its
    # variant and overrides, and its test metrics as columns, no parent to expand.
    assert summary.ui_link in summary.describe() and summary.ui_link.startswith(uri)
    expected = [
        "Run Name",
        "au_pro",
        "pixel_f1_max",
        "full model / coins / seed 0",
        "(base config)",
        f"{runs.iloc[0]['metrics.au_pro']:.4f}"[:5],
    ]
    for attempt in range(3):  # the UI is a JS app: give a slow machine more virtual time
        shown = page_text(
            render_dom(
                chromium, summary.ui_link, tmp_path / f"profile{attempt}", 20_000 * (attempt + 1)
            )
        )
        if all(text in shown for text in expected):
            break
    assert all(text in shown for text in expected), shown[:3000]
    assert "You're viewing a shared view" in shown and "served (study)" not in shown


def test_a_study_killed_mid_way_resumes_without_duplicates_or_losses(tmp_path, joined_ray):
    uri = fresh_store(tmp_path)
    command = smoke_study_command("killed", uri, tmp_path / "runs", "--set", "train.epochs=3")
    driver = start_driver(command, joined_ray, output=subprocess.DEVNULL)
    deadline = time.time() + 240
    finished_before = set()
    while not finished_before and time.time() < deadline and driver.poll() is None:
        time.sleep(1)
        try:
            runs = _cell_runs(uri, "killed")
        except Exception:  # the store or experiment does not exist yet
            continue
        if len(runs) and "status" in runs:
            finished_before = set(runs.loc[runs["status"] == "FINISHED", "tags.cell_key"])
    assert driver.poll() is None, "the study finished before it could be interrupted"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert finished_before
    # Two trials run at once and end together: another may have finished before the kill.
    runs = _cell_runs(uri, "killed")
    finished_at_kill = set(runs.loc[runs["status"] == "FINISHED", "tags.cell_key"])
    assert finished_before <= finished_at_kill and len(finished_at_kill) < 4
    status = study_status(uri, "killed")  # the driver died: its last records say how far
    assert status.count("finished") == len(finished_at_kill) and len(status.cells) == 4
    assert status.count("running") + status.count("missing") == 4 - len(finished_at_kill)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, env=joined_ray)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(finished_at_kill)} already finished" in rerun.stdout, rerun.stdout[-1500:]
    runs = _cell_runs(uri, "killed")
    assert len(runs) == 4 and runs["tags.cell_key"].is_unique
    assert set(runs["status"]) == {"FINISHED"} and runs["metrics.au_pro"].notna().all()
    untouched = runs[runs["tags.cell_key"].isin(finished_at_kill)]
    assert set(untouched["tags.attempts"]) == {"1"}  # finished cells were not trained again


def _epochs_recorded(uri, study, attempt):
    """Epochs of ``val_au_pro`` the cell's run holds while its ``attempt`` is running."""
    try:
        runs = _cell_runs(uri, study)
    except Exception:  # the store or experiment does not exist yet
        return 0
    if not len(runs) or "tags.attempts" not in runs:
        return 0
    run = runs.iloc[0]
    if run["status"] != "RUNNING" or run["tags.attempts"] != str(attempt):
        return 0
    return len(mlflow.MlflowClient(uri).get_metric_history(run["run_id"], "val_au_pro"))


def _interrupt(command, environment, uri, study, signum, attempt):
    """Start a study driver, send it ``signum`` once its cell's ``attempt`` has recorded a
    new epoch (the ``attempt``-th), and return the driver's exit code and output."""
    driver = start_driver(command, environment)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            time.sleep(1)
            if _epochs_recorded(uri, study, attempt) >= attempt:
                break
        assert driver.poll() is None, "the study ended before it could be interrupted"
        os.kill(driver.pid, signum)
        output, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    return driver.returncode, output


def test_an_interrupted_study_says_so_and_its_rerun_keeps_every_epoch(tmp_path, joined_ray):
    """SIGINT (Ctrl-C), then SIGTERM on the rerun: each driver exits non-zero naming the
    interrupted cell, whose run is KILLED, not RUNNING; the last rerun finishes it with every
    epoch recorded once."""
    uri = fresh_store(tmp_path)
    one_cell = ("--categories", "brick", "--variants", "full-model", "--set", "train.epochs=4")
    command = smoke_study_command("stopped", uri, tmp_path / "runs", *one_cell)
    for attempt, signum in enumerate((signal.SIGINT, signal.SIGTERM), start=1):
        code, output = _interrupt(command, joined_ray, uri, "stopped", signum, attempt)
        assert code == 130, output[-2000:]
        assert "INTERRUPTED: 1 stopped mid-training" in output, output[-2000:]
        assert "interrupted: full model / brick / seed 0 (its run is KILLED)" in output
        assert list(_cell_runs(uri, "stopped")["status"]) == ["KILLED"]
        assert study_status(uri, "stopped").count("interrupted") == 1
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=joined_ray)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = _cell_runs(uri, "stopped")
    assert list(runs["status"]) == ["FINISHED"] and list(runs["tags.attempts"]) == ["3"]
    client = mlflow.MlflowClient(uri)
    for metric in ("loss", "lr", "val_au_pro"):
        history = client.get_metric_history(runs["run_id"].iloc[0], metric)
        steps = sorted(m.step for m in history)
        assert steps == [0, 1, 2, 3], metric


def test_a_code_change_retrains_the_cells_and_the_report_shows_only_the_new_code(tmp_path):
    """A smoke study, one line of pagmfr changed (in a copy of the package, without git), the
    study re-run: its cell is retrained, and the report shows the new code's run only; a change
    to the report or the CLI retrains nothing."""
    package = tmp_path / "package"
    shutil.copytree(PACKAGE_DIR, package / "pagmfr", ignore=shutil.ignore_patterns("__pycache__"))
    uri = fresh_store(tmp_path)
    command = smoke_study_command(
        "changed", uri, tmp_path / "runs", "--variants", "full model", "--categories", "brick"
    )
    command += ["--set", "train.epochs=1"]
    environment = {**OWN_RAY, "PYTHONPATH": str(package)}

    def run_study():
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    run_study()
    with open(package / "pagmfr" / "metrics.py", "a") as source:
        source.write("\n# a bug fix\n")
    output = run_study()
    assert "1 cell(s) finished with other code (0.1.0+src." in output and "are retrained" in output
    runs = _cell_runs(uri, "changed")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    old, new = runs.sort_values("start_time")["tags.code_version"]
    assert old != new and new.startswith("0.1.0+src.")

    report = report_study(uri, "changed", tmp_path / "report", metrics=["au_pro"])
    kept = report.selection.kept
    assert list(kept["code_version"]) == [new] and report.selection.code_versions == {new: 1}
    assert f"Code: {new} (1 runs)." in (tmp_path / "report" / "report.md").read_text()
    older = report_study(uri, "changed", tmp_path / "old", metrics=["au_pro"], code_version=old)
    assert list(older.selection.kept["code_version"]) == [old]

    # A change outside the code that trains the cell (the report, the CLI): nothing retrained.
    for edited in ("report/latex.py", "cli.py"):
        with open(package / "pagmfr" / edited, "a") as source:
            source.write("\n# a typo fixed\n")
    output = run_study()
    assert "1 already finished" in output and "0 trained now" in output, output[-1500:]
    # --keep-old-results after a training-code change: tests/test_study_records.py.


def search_space(trial):
    """Module level: Tune pickles the searcher, and with it the space."""
    trial.suggest_float("loss.focal", 0.5, 20.0, log=True)
    if trial.suggest_categorical("anomaly.head_form", ["linear", "residual"]) == "residual":
        trial.suggest_categorical("fusion.channels", [16, 32])


def test_hpo_over_several_categories_exports_a_best_config_through_the_storage(tmp_path):
    space = search_space
    options = _options(tmp_path, name="search")
    base = Config().with_overrides({**QUICK, "train.epochs": 2})
    # A URI: written through pyarrow's filesystem, not into a local folder named "file:".
    target = (tmp_path / "exported" / "best_config.json").as_uri()
    location = run_hpo(
        base,
        space,
        ["brick", "coins"],
        trials=2,
        options=options,
        grace_period=1,
        reduction_factor=3,
        out=target,
    )
    assert location == target and not (tmp_path / "file:").exists()
    record = json.loads((tmp_path / "exported" / "best_config.json").read_text())
    assert record["metric"] == "val_au_pro" and record["categories"] == ["brick", "coins"]
    overrides = load_best_config(location)
    assert "loss.focal" in overrides and overrides["anomaly.head_form"] in ("linear", "residual")
    # define-by-run: the fusion width is sampled only under the head that reads fused features
    assert ("fusion.channels" in overrides) == (overrides["anomaly.head_form"] == "residual")
    Config().with_overrides(overrides)  # usable as an ablation study's base
    runs = _cell_runs(options.tracking_uri, "search")
    assert len(runs) == 2 and runs["tags.variant"].str.startswith("hpo-").all()
    assert set(runs["tags.category"]) == {"brick+coins"}
    # The objective is the mean over the categories, recorded beside each category's value.
    for _, run in runs.iterrows():
        per_category = [run[f"metrics.val_au_pro/{c}"] for c in ("brick", "coins")]
        assert run["metrics.val_au_pro"] == pytest.approx(sum(per_category) / 2)
    with pytest.raises(ValueError, match="validation metric"):
        run_hpo(base, space, "brick", trials=1, options=options, metric="au_pro")
    with pytest.raises(ValueError, match="--grace-period 5: must be between 1 and train.epochs"):
        run_hpo(base, space, "brick", trials=1, options=options, grace_period=5)
