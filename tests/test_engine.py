import json
import math
import os

import pytest
import torch

import pagmfr
from pagmfr.cli import main
from pagmfr.config import Config, describe_selection
from pagmfr.engine import (
    NonFiniteLossError,
    anomaly_metrics,
    checkpoint_path,
    fit,
    infer,
    load_checkpoint,
    prepare_training,
    seed_everything,
)
from pagmfr.engine.runtime import CUBLAS_WORKSPACE, set_determinism
from pagmfr.models import build_model
from pagmfr.study.presets import PAPER_TRAINING
from pagmfr.study.presets import QUICK_TRAINING as QUICK


def _config(**overrides):
    return Config().with_overrides({**QUICK, **overrides})


def _validation_metrics(model, setup):
    maps, scores = infer(model, [setup.images], torch.device("cpu"))
    return anomaly_metrics(maps, setup.masks, scores, setup.labels)


def _weights(path):
    return load_checkpoint(path)["model"]


def _assert_same_weights(path, other):
    theirs = _weights(other)
    for key, value in _weights(path).items():
        assert torch.equal(value, theirs[key]), key


def _numbers(history):
    """A history without its timings and memory, which differ from run to run."""
    return [
        {k: v for k, v in h.items() if k not in ("epoch_seconds", "peak_memory_mb")}
        for h in history
    ]


@pytest.mark.slow
def test_short_training_lowers_the_loss_and_beats_the_untrained_model(tmp_path):
    # Without the patch memory, whose evidence makes even an untrained model a fair detector:
    # what is tested here is that the loop learns.
    config = _config(
        **{"data.category": "brick", "train.epochs": 30, "loss.focal": 20.0, "anomaly.knn": False}
    )
    seed_everything(config.train.seed)
    setup = prepare_training(config)
    model = build_model(config)
    model.prepare(setup.clean_batches(8))  # what a fit does before its first epoch
    untrained = _validation_metrics(model, setup)
    result = fit(config, tmp_path, callbacks=())
    # The reconstruction learns; the focal term need not fall: the evidence it weighs sharpens
    # as the reconstruction does (here 0.12 -> 0.14 while validation AU-PRO rises to 0.87).
    features = [h["loss/feature"] for h in result.history]
    assert features[-1] < 0.5 * features[0]
    trained = result.best_metrics
    assert trained["val_au_pro"] > untrained["au_pro"] + 0.15  # 0.64 -> 0.87 here
    assert trained["val_pixel_auroc"] > untrained["pixel_auroc"] + 0.1  # 0.80 -> 0.96
    # The best checkpoint holds what was selected, by the protocol it names.
    best = load_checkpoint(result.best_checkpoint)
    assert best["selection"] == config.validation.select and best["epoch"] == result.best_epoch


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path):
    config = _config(**{"data.category": "brick", "train.epochs": 3})  # Perlin masks: texture
    straight = fit(config, tmp_path / "straight", callbacks=())

    def stop_after_first_epoch(report):
        if report.epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(config, tmp_path / "resumed", callbacks=(stop_after_first_epoch,))
    resumed = fit(config, tmp_path / "resumed", callbacks=())
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert _numbers(resumed.history) == _numbers(straight.history)
    _assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)


@pytest.mark.slow
def test_same_seed_same_numbers_on_cpu(tmp_path):
    config = _config(**{"data.category": "gravel", "train.epochs": 2})
    first = fit(config, tmp_path / "a", callbacks=())
    again = fit(config, tmp_path / "b", callbacks=())
    other = fit(config.with_overrides({"train.seed": 1}), tmp_path / "c", callbacks=())
    assert [h["loss"] for h in first.history] == [h["loss"] for h in again.history]
    assert first.best_metrics == again.best_metrics
    assert [h["loss"] for h in first.history] != [h["loss"] for h in other.history]


@pytest.fixture
def determinism_restored():
    """torch's deterministic mode is process-wide: back to off after the test."""
    yield
    set_determinism(False)


def test_determinism_sets_torchs_flags_and_the_cublas_workspace(monkeypatch, determinism_restored):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    set_determinism(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # warns where there is none
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # chosen before the run: it stands
    set_determinism(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    set_determinism(False)  # the next run's config, in the same process (a reused Ray worker)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_deterministic_is_a_config_key_off_by_default_and_on_in_the_paper_preset():
    assert Config().train.deterministic is False
    assert _config(**{"train.deterministic": "true"}).train.deterministic is True
    assert _config(**PAPER_TRAINING).train.deterministic is True


@pytest.mark.parametrize(
    "method", ["pagmfr", "patchcore", pytest.param("rgpkd", marks=pytest.mark.slow)]
)
@pytest.mark.filterwarnings("error:.*does not have a deterministic implementation")
def test_deterministic_training_on_the_cpu_works_and_changes_no_number(
    tmp_path, method, determinism_restored
):
    """The CPU is deterministic already; with the key on, no operation of a method lacks a
    deterministic CPU kernel (PyTorch's warning fails the test) and every number stays."""
    runs = {}
    for on in (False, True):
        config = _config(
            method=method,
            **{"data.category": "brick", "train.epochs": 2, "train.deterministic": on},
        )
        runs[on] = pagmfr.train(config, tmp_path / str(on), callbacks=())
        recorded = json.loads((tmp_path / str(on) / "metrics.json").read_text())["config"]
        assert recorded["train.deterministic"] is on
    assert _numbers(runs[True]["history"]) == _numbers(runs[False]["history"])
    for metric in ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max"):
        assert runs[True][metric] == runs[False][metric], metric
    _assert_same_weights(*(checkpoint_path(tmp_path / str(on), config, "last") for on in runs))


@pytest.mark.slow
def test_resuming_with_another_config_is_refused(tmp_path):
    fit(_config(**{"train.epochs": 1}), tmp_path, callbacks=())
    with pytest.raises(ValueError, match=r"written with a different config \(loss.focal\)"):
        fit(_config(**{"train.epochs": 1, "loss.focal": 3.0}), tmp_path, callbacks=())


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_with_a_clear_error(tmp_path):
    def diverge(report):
        with torch.no_grad():
            for parameter in report.model.reconstruction.parameters():
                parameter.fill_(float("nan"))

    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at epoch 2, step 1 .*lower train.lr"
    ):
        fit(_config(**{"train.epochs": 3}), tmp_path, callbacks=(diverge,))


@pytest.mark.slow
@pytest.mark.parametrize("select", ["last", "val_pixel_auroc"])
def test_the_selection_protocol_tests_the_epoch_it_names(tmp_path, select):
    config = _config(**{"data.category": "coins", "train.epochs": 3, "validation.select": select})
    result = fit(config, tmp_path, callbacks=())
    values = [h["val_pixel_auroc"] for h in result.history]  # validated every epoch either way
    expected = 2 if select == "last" else values.index(max(values))
    assert result.best_epoch == expected
    assert load_checkpoint(result.best_checkpoint)["epoch"] == expected


def test_a_validation_set_can_alternate_anomaly_families():
    config = _config(**{"data.category": "coins", "validation.strategy": "defects+adaptive"})
    mixed = prepare_training(config)
    alone = [
        prepare_training(config.with_overrides({"validation.strategy": family}))
        for family in ("defects", "adaptive")
    ]
    anomalous = [i for i, label in enumerate(mixed.labels) if label]
    assert len(anomalous) >= 2
    for j, i in enumerate(anomalous):  # the j-th anomalous image takes the j-th family in turn
        torch.testing.assert_close(mixed.images[i], alone[j % 2].images[i])
        assert (mixed.masks[i] == alone[j % 2].masks[i]).all()
    with pytest.raises(ValueError, match="validation.strategy: unknown strategy 'bogus'"):
        config.with_overrides({"validation.strategy": "defects+bogus"})


@pytest.mark.slow
def test_choosing_on_the_test_set_is_explicit_and_recorded(tmp_path, quick_train_args):
    assert main(quick_train_args("coffee", tmp_path, "--set", "validation.select=test_au_pro")) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["selection"] == "test_au_pro" and "test_au_pro" in metrics["selection_metrics"]
    assert metrics["selection_protocol"] == "best test_au_pro (chosen on the test split)"


@pytest.mark.slow
def test_cli_train_evaluate_predict_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        "synthetic",
        "--category",
        "coins",
        "--image-size",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--weights",
        "none",
        "--out",
        str(out),
        "--set",
        "anomaly.smoothing_sigma=1",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    default = Config().validation
    protocol = describe_selection(default.select, default.strategy)
    assert "au_pro" in printed and f"tested ({protocol})" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["seed"] == 0 and metrics["config"]["data.category"] == "coins"
    assert metrics["code_version"].startswith("0.1.0") and len(metrics["data_fingerprint"]) == 32
    assert metrics["timings"]["epochs"] == 2 and len(metrics["history"]) == 2
    assert len(list((out / "heatmaps").rglob("*.png"))) == metrics["test_images"] == 28

    config = Config.from_flat(metrics["config"])
    best = checkpoint_path(out, config, "best")
    assert best.name == "pagmfr_coins_best.pt"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(best),
                "--out",
                str(tmp_path / "eval"),
                "--full-resolution",
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["resolution"] == "full" and evaluated["image_auroc"] == metrics["image_auroc"]

    images = sorted((out.parent / "run" / "heatmaps" / "missing").glob("*.png"))[:2]
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(best),
                *map(str, images),
                "--out",
                str(tmp_path / "pred"),
            ]
        )
        == 0
    )
    scores = json.loads((tmp_path / "pred" / "scores.json").read_text())
    assert len(scores) == 2 and all(math.isfinite(s["score"]) for s in scores)  # logits
    assert (tmp_path / "pred" / "maps.npz").is_file()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("loss.focl=2", r"unknown config key 'loss.focl'; did you mean loss.focal"),
        ("fusion.mode=cat", r"fusion.mode must be one of concat, add, none; got 'cat'"),
        ("train.lr=-1", r"train.lr must be in \(0, 10\); got -1.0"),
        (
            "generator.strategy=perlin",
            r"generator.strategy: unknown strategy 'perlin'; allowed: adaptive",
        ),
        ("backbone.layers=3,1", r"backbone.layers must be increasing stages"),
        ("train.deterministic=maybe", r"train.deterministic must be true or false; got 'maybe'"),
        ("nonsense", r"--set expects key=value, got 'nonsense'"),
    ],
)
def test_bad_set_values_fail_at_once_naming_the_key(tmp_path, capsys, setting, message):
    assert main(["train", "--out", str(tmp_path), "--set", setting]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not any(tmp_path.iterdir())  # nothing trained
