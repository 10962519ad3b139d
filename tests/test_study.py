"""The study harness on a real local Ray, a real MLflow store and a real `mlflow server`."""

import json
import os
import shutil
import signal
import subprocess
import time

import mlflow
import pytest
import ray
from conftest import smoke_study_command

from pagmfr.config import Config
from pagmfr.data.pipeline import resolve_data_root
from pagmfr.study import StudyOptions, load_best_config, run_ablation, run_hpo, start_local_ray
from pagmfr.study.presets import SMOKE_TRAINING as QUICK

pytestmark = [pytest.mark.slow, pytest.mark.integration]

VARIANTS = {"full model": {}, "w/o MFFM": {"fusion.mode": "none"}}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def _options(tmp_path, name="smoke", uri=None, **kwargs):
    uri = uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
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
    summary = run_ablation(base, VARIANTS, ["brick", "coins"], [0], options)
    assert (summary.cells, summary.trained, summary.failed) == (4, 4, [])
    runs = _cell_runs(options.tracking_uri, "smoke")
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert runs["tags.cell_key"].is_unique
    assert set(zip(runs["tags.variant"], runs["tags.category"], strict=True)) == {
        (v, c) for v in VARIANTS for c in ("brick", "coins")
    }
    assert set(runs["tags.method"]) == {"pagmfr"} and set(runs["tags.seed"]) == {"0"}
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

    again = run_ablation(base, VARIANTS, ["brick", "coins"], [0], options)
    assert (again.already_finished, again.trained) == (4, 0)
    assert len(_cell_runs(options.tracking_uri, "smoke")) == 4


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
    summary = run_ablation(base, variants, ["brick"], [0], options)
    assert summary.failed == ["own textures/brick/seed0"] and summary.trained == 1
    runs = _cell_runs(options.tracking_uri, "broken").set_index("tags.variant")
    assert runs.loc["full model", "status"] == "FINISHED"
    assert runs.loc["own textures", "status"] == "FAILED"
    cause = runs.loc["own textures", "tags.error"].strip().splitlines()[-1]  # what reports show
    assert cause.endswith(
        f"ImageReadError: {textures / '005.png'}: not a readable image (empty, "
        "truncated or not an image file); replace it with a valid PNG"
    )


def test_recording_to_a_real_mlflow_server(tmp_path, mlflow_server):
    uri = mlflow_server.uri
    options = _options(tmp_path, name="served", uri=uri)
    base = Config().with_overrides({**QUICK, "train.epochs": 1})
    summary = run_ablation(base, {"full model": {}}, ["coins"], [0], options)
    assert summary.trained == 1
    runs = _cell_runs(uri, "served")
    assert list(runs["status"]) == ["FINISHED"] and runs["metrics.au_pro"].notna().all()
    client = mlflow.tracking.MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(runs.iloc[0]["run_id"])} == {
        "heatmaps",
        "metrics.json",
    }


def test_a_study_killed_mid_way_resumes_without_duplicates_or_losses(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = smoke_study_command("killed", uri, tmp_path / "runs", "--set", "train.epochs=3")
    driver = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
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

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(finished_before)} already finished" in rerun.stdout
    runs = _cell_runs(uri, "killed")
    assert len(runs) == 4 and runs["tags.cell_key"].is_unique
    assert set(runs["status"]) == {"FINISHED"} and runs["metrics.au_pro"].notna().all()
    untouched = runs[runs["tags.cell_key"].isin(finished_before)]
    assert set(untouched["tags.attempts"]) == {"1"}  # finished cells were not trained again


def search_space(trial):
    """Module level: Tune pickles the searcher, and with it the space."""
    trial.suggest_float("loss.focal", 0.5, 20.0, log=True)
    if trial.suggest_categorical("fusion.mode", ["concat", "none"]) != "none":
        trial.suggest_categorical("fusion.channels", [16, 32])


def test_hpo_with_asha_exports_a_best_config(tmp_path):
    space = search_space
    options = _options(tmp_path, name="search")
    base = Config().with_overrides({**QUICK, "train.epochs": 3})
    path = run_hpo(base, space, "brick", trials=3, options=options, grace_period=1)
    record = json.loads(path.read_text())
    assert record["metric"] == "val_au_pro" and 0.0 <= record["value"] <= 1.0
    overrides = load_best_config(path)
    assert "loss.focal" in overrides and overrides["fusion.mode"] in ("concat", "none")
    assert ("fusion.channels" in overrides) == (overrides["fusion.mode"] != "none")
    Config().with_overrides(overrides)  # usable as an ablation study's base
    runs = _cell_runs(options.tracking_uri, "search")
    assert len(runs) == 3 and runs["tags.variant"].str.startswith("hpo-").all()
    with pytest.raises(ValueError, match="validation metric"):
        run_hpo(base, space, "brick", trials=1, options=options, metric="au_pro")
