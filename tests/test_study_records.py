"""Study records without Ray: cell keys and code, identical variants, resumed epochs, the
MLflow view, and files in the study's storage."""

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import fresh_store
from mlflow.tracking import MlflowClient

from pagmfr.categories import category_kind
from pagmfr.code_scope import (
    SHARED_ROOTS,
    method_code_fingerprint,
    scope_fingerprint,
    training_modules,
)
from pagmfr.config import Config
from pagmfr.provenance import PACKAGE_DIR, code_fingerprint, code_version
from pagmfr.study import storage
from pagmfr.study.cells import (
    NOT_IN_KEY,
    StudyGrid,
    cell_key,
    config_key,
    describe_overrides,
    short_hash,
)
from pagmfr.study.cli import hpo_main
from pagmfr.study.presets import SMOKE_TRAINING, Preset
from pagmfr.study.search import load_best_config
from pagmfr.study.spec import TrialSpec
from pagmfr.study.stale import cells_done
from pagmfr.study.tracking import CELL_VIEW, StudyTracker

METHOD_SOURCE = """
from pagmfr.models import AnomalyMethod, register_model


class Probe(AnomalyMethod):
    trains = False

    def predict(self, images):
        raise NotImplementedError


register_model("records_probe", Probe, replace=True)
"""


def test_the_cell_key_pins_config_data_and_code():
    config = Config().with_overrides({"fusion.mode": "none"})
    assert cell_key(config, "data", "code-a") != cell_key(config, "data", "code-b")
    assert config_key(config, "data") == config_key(config, "data")
    assert config_key(config, "data") != config_key(config, "other data")
    # Where the data lives, loader workers, the device, its determinism and the feature cache
    # (the same features, up to float rounding) change no result.
    moved = config.with_overrides(
        {
            "data.root": "/elsewhere",
            "data.num_workers": 8,
            "train.deterministic": True,
            "train.feature_cache_mb": 0,
        }
    )
    assert cell_key(moved, "data", "code-a") == cell_key(config, "data", "code-a")
    fingerprints = {method_code_fingerprint(m) for m in ("pagmfr", "rgpkd", "patchcore")}
    assert len(fingerprints) == 3 and code_fingerprint() not in fingerprints


def test_a_key_added_later_leaves_the_keys_of_earlier_cells_alone_at_its_default():
    """``data.validation_images`` came after studies had recorded cells: at ``auto`` (what
    the code did before it, for every layout it read) the key is what it was without it."""
    config = Config()
    flat = config.to_flat(own_method_only=True)
    before = {
        k: v for k, v in flat.items() if k not in NOT_IN_KEY and k != "data.validation_images"
    }
    assert config_key(config, "data") == short_hash({"config": before, "data": "data"})
    held_out = config.with_overrides({"data.validation_images": "from_train"})
    assert config_key(held_out, "data") != config_key(config, "data")


def _scope(package, method):
    roots = (f"pagmfr.models.{method}", *SHARED_ROOTS)
    return scope_fingerprint(roots, package_dir=package)


def test_a_cell_is_keyed_by_the_code_that_trains_it(tmp_path):
    """Editing the report or the CLI changes no method's fingerprint; editing PAGMFR's module
    changes PAGMFR's and no other; editing the engine changes every method's."""
    package = Path(shutil.copytree(PACKAGE_DIR, tmp_path / "pagmfr"))
    methods = ("pagmfr", "rgpkd", "patchcore")
    before = {m: _scope(package, m) for m in methods}
    assert before == {m: method_code_fingerprint(m) for m in methods}  # the copy is this code
    for edited in ("report/latex.py", "cli.py", "study/ablation.py", "demo.py"):
        with open(package / edited, "a") as file:
            file.write("\n# a typo fixed\n")
        assert {m: _scope(package, m) for m in methods} == before, edited
    with open(package / "models" / "pagmfr.py", "a") as file:
        file.write("\n# a fix in PAGMFR\n")
    after = {m: _scope(package, m) for m in methods}
    assert after["pagmfr"] != before["pagmfr"]
    assert (after["rgpkd"], after["patchcore"]) == (before["rgpkd"], before["patchcore"])
    with open(package / "engine" / "fit.py", "a") as file:
        file.write("\n# a fix in the training loop\n")
    assert all(_scope(package, m) != after[m] for m in methods)
    modules = training_modules(("pagmfr.models.patchcore", *SHARED_ROOTS))
    assert "pagmfr.models.pagmfr" not in modules and "pagmfr.models.build" in modules
    assert not [m for m in modules if m.startswith(("pagmfr.report", "pagmfr.cli"))]


def test_names_a_package_loads_on_first_use_are_in_the_scope():
    """``from pagmfr.anomalies import make_generator`` names a package that loads it on first
    use (its ``_LAZY`` table): the cell still depends on the generator's modules."""
    modules = training_modules(("pagmfr.engine.data",))
    assert {"pagmfr.anomalies.generator", "pagmfr.anomalies.strategies"} <= set(modules)


def test_a_user_method_is_keyed_by_its_own_source(tmp_path):
    """A method registered outside pagmfr lives in the user's file: editing it must retrain
    its cells, though pagmfr's own fingerprint does not change."""
    source = tmp_path / "records_probe_method.py"
    source.write_text(METHOD_SOURCE)
    spec = importlib.util.spec_from_file_location("records_probe_method", source)
    module = sys.modules["records_probe_method"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    method_code_fingerprint.cache_clear()
    before = method_code_fingerprint("records_probe")
    source.write_text(METHOD_SOURCE + "\n# a fix in the user's method\n")
    method_code_fingerprint.cache_clear()
    after = method_code_fingerprint("records_probe")
    assert before != after and code_fingerprint() not in (before, after)


def test_variants_that_give_the_same_config_are_refused_saying_why():
    base = Config().with_overrides({"fusion.mode": "none"})
    variants = {
        "full model": {},
        "w/o MFFM": {"fusion.mode": "none"},
        "add": {"fusion.mode": "add"},
    }
    with pytest.raises(ValueError) as caught:
        StudyGrid(base, variants, ["brick"], [0]).cells()
    assert str(caught.value) == (
        "variants 'full model' (no overrides) and 'w/o MFFM' (fusion.mode=none) give the same "
        "config, so their cells would be identical: the base config already sets "
        "fusion.mode=none (from --base-config or --set?). Change the base config or drop one "
        "of these variants."
    )
    assert describe_overrides({"fusion.mode": "none", "loss.focal": 5.0}) == (
        "fusion.mode=none, loss.focal=5.0"
    )


def _spec(key="cell-1"):
    return TrialSpec(
        key=key,
        config_key="config-1",
        code="code",
        variant="full model",
        overrides="(base config)",
        category="brick",
        kind="texture",
        seed=0,
        method="pagmfr",
        fingerprint="f",
        config={"method": "pagmfr"},
    )


def test_epochs_reported_again_after_a_resume_are_logged_once(tmp_path):
    """A trial restored from its checkpoint re-reports the epochs since then, in the same
    driver or in a restarted one: each step is recorded once, with its first value."""
    uri = fresh_store(tmp_path)
    tracker = StudyTracker(uri, "resumed")
    run_id = tracker.open_cell(_spec())
    for epoch in range(3):
        tracker.log_metrics(run_id, {"loss": 1.0 - epoch / 10}, step=epoch)
    tracker.log_metrics(run_id, {"loss": 9.0}, step=2)  # restored in the same driver
    restarted = StudyTracker(uri, "resumed")  # a new driver process reopens the cell
    assert restarted.open_cell(_spec()) == run_id
    for epoch in (1, 2, 3):
        restarted.log_metrics(run_id, {"loss": 5.0, "resumed_from_epoch": 1.0}, step=epoch)
    history = MlflowClient(uri).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.9), (2, 0.8), (3, 5.0)]
    resumed = MlflowClient(uri).get_metric_history(run_id, "resumed_from_epoch")
    assert [m.step for m in resumed] == [1, 2, 3]


def test_cells_of_versions_before_per_method_keys_are_found_for_keep_old_results(tmp_path):
    """Runs recorded before cells were keyed on their own method's settings carry a config
    key over every method's: --keep-old-results still finds them."""
    cell = StudyGrid(Config(), {"full model": {}}, ["brick"], [0]).cells()[0]
    assert cell.legacy_config_key != cell.config_key
    tracker = StudyTracker(fresh_store(tmp_path), "upgraded")
    old = dataclasses.replace(cell.spec(), key="old-key", config_key=cell.legacy_config_key)
    tracker.finish(tracker.open_cell(old))
    assert cells_done([cell], tracker, keep_old=True).reused == {cell.key: "old-key"}
    assert "are retrained" in cells_done([cell], tracker, keep_old=False).note


def test_keep_old_results_keeps_a_cell_finished_with_other_code(tmp_path):
    """After a change to the code that trains it, a finished cell is retrained, unless
    --keep-old-results keeps its run (tests/test_study.py edits the code for real)."""
    cell = StudyGrid(Config(), {"full model": {}}, ["brick"], [0]).cells()[0]
    tracker = StudyTracker(fresh_store(tmp_path), "kept")
    tracker.finish(tracker.open_cell(dataclasses.replace(cell.spec(), key="old", code="old")))
    kept = cells_done([cell], tracker, keep_old=True)
    assert kept.reused == {cell.key: "old"}
    assert "1 cell(s) finished with other code (" in kept.note and ") are kept" in kept.note
    retrained = cells_done([cell], tracker, keep_old=False).note
    # the version can be the same (a user's method edited without a commit): the code is named
    now = f"are retrained with {code_version()} (code pagmfr {cell.code[:8]})"
    assert f"code pagmfr old) {now}" in retrained


def test_a_finished_run_is_never_reopened_and_a_killed_one_is(tmp_path):
    """A trial of a finished cell (an HPO trial sampling a config already tried) gets a run
    of its own; a run an interrupt left KILLED is reopened and resumed."""
    uri = fresh_store(tmp_path)
    tracker = StudyTracker(uri, "reopened")
    finished = tracker.open_cell(_spec())
    tracker.finish(finished)
    again = tracker.open_cell(_spec())
    client = MlflowClient(uri)
    assert again != finished and client.get_run(finished).info.status == "FINISHED"
    tracker.kill(again)
    assert client.get_run(again).info.status == "KILLED"
    assert tracker.open_cell(_spec()) == again
    reopened = client.get_run(again)
    assert reopened.info.status == "RUNNING" and reopened.data.tags["attempts"] == "2"


def test_the_experiment_opens_on_the_cells_with_their_metric_columns(tmp_path):
    uri = fresh_store(tmp_path)
    tracker = StudyTracker(uri, "viewed", view_metrics=["au_pro", "image_auroc"])
    tags = MlflowClient(uri).get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags[f"mlflow.sharedViewState.{CELL_VIEW}"])
    assert view["searchFilter"] == "tags.role = 'cell'"
    assert view["selectedColumns"][-2:] == ["metrics.`au_pro`", "metrics.`image_auroc`"]
    assert "tags.`overrides`" in view["selectedColumns"]
    assert tracker.ui_link() == (
        f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs"
        "?workflowType=machine_learning&viewStateShareKey=pagmfr-cells"
    )
    run = MlflowClient(uri).get_run(tracker.open_cell(_spec()))
    assert run.info.run_name == "full model / brick / seed 0"
    assert run.data.tags["overrides"] == "(base config)" and run.data.tags["config_key"]
    assert "mlflow.parentRunId" not in run.data.tags  # top level: nothing to expand in the UI


def test_a_best_config_goes_through_the_storage_filesystem(tmp_path):
    location = (tmp_path / "bucket" / "hpo" / "best_config.json").as_uri()
    storage.write_text(location, json.dumps({"overrides": {"loss.focal": 2.0}}))
    assert not (tmp_path / "file:").exists()
    assert load_best_config(location) == {"loss.focal": 2.0}
    assert storage.join("s3://bucket/runs/", "hpo", "best_config.json") == (
        "s3://bucket/runs/hpo/best_config.json"
    )
    with pytest.raises(FileNotFoundError, match="best-config file not found: file://"):
        load_best_config(location.replace("hpo", "nothing"))
    broken = tmp_path / "broken.json"
    broken.write_text("{truncated")
    with pytest.raises(ValueError, match=f"{broken}: not a best_config.json written by"):
        load_best_config(broken)


def test_hpo_options_are_checked_before_any_work(capsys):
    presets = {"smoke": Preset(data="synthetic", categories=["brick"], seeds=[0], trials=1)}
    presets["smoke"] = Preset(**{**presets["smoke"].__dict__, "overrides": SMOKE_TRAINING})
    assert hpo_main(lambda trial: None, presets, "", ["--grace-period", "9"]) == 2
    output = capsys.readouterr()
    assert "pagmfr: error: --grace-period 9: must be between 1 and train.epochs (2)" in output.err
    assert "the HPO objective is val_au_pro on one category (brick)" in output.err
    assert hpo_main(lambda trial: None, presets, "", ["--reduction-factor", "1"]) == 2
    assert "--reduction-factor 1: must be at least 2" in capsys.readouterr().err
    for option in ("--grace-period", "--reduction-factor"):  # 0 is refused, not the preset's
        assert hpo_main(lambda trial: None, presets, "", [option, "0"]) == 2
        assert f"{option} 0: must be" in capsys.readouterr().err


def test_the_paper_hpo_preset_tunes_on_two_textures_and_two_objects(capsys):
    """The paper preset's objective covers several categories: the data check, run before
    anything is scheduled, is asked for all four (absent from the embedded data)."""
    script = Path(__file__).parents[1] / "studies" / "hpo.py"
    spec = importlib.util.spec_from_file_location("hpo_study", script)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    paper = study.PRESETS["paper"]
    kinds = [category_kind(c) for c in paper.categories]
    assert sorted(kinds) == ["object", "object", "texture", "texture"]
    argv = ["--preset", "paper", "--data", "synthetic"]
    assert hpo_main(study.space, study.PRESETS, "", argv) == 2
    errors = capsys.readouterr().err
    assert "one category" not in errors  # no single-category warning
    for category in paper.categories:
        assert f"category '{category}' not found" in errors
