"""A method registered from outside pagmfr trains, evaluates and runs in a study, with no edit
inside the package: the method contract and the registry are the only way in."""

from dataclasses import dataclass

import mlflow
import pytest
import ray
import torch
import torch.nn.functional as F
from conftest import fresh_store
from torch import nn

import pagmfr
from pagmfr.cli import main
from pagmfr.config import Config
from pagmfr.models import AnomalyMethod, available_methods, build_model, register_model
from pagmfr.study import StudyGrid, StudyOptions, run_ablation, start_local_ray
from pagmfr.study.presets import SMOKE_TRAINING


@dataclass
class ColourSettings:
    """The method's own knobs: the config section ``colour.*``."""

    width: int = 8

    def checks(self):
        return [("width", self.width >= 1, "must be >= 1")]


class ColourDistance(AnomalyMethod):
    """A tiny method: a learned per-pixel embedding whose normal pixels are pulled to a centre
    fitted on clean training images; the distance to the centre is the anomaly map."""

    default_scheduler = "constant"

    def __init__(self, config):
        super().__init__()
        self.embed = nn.Conv2d(3, config.colour.width, 3, padding=1)
        self.register_buffer("centre", torch.zeros(config.colour.width))

    def _distance(self, images):
        return (self.embed(images) - self.centre.view(1, -1, 1, 1)).pow(2).sum(1, keepdim=True)

    @torch.no_grad()
    def prepare(self, clean_batches):
        means = [self.embed(batch).mean(dim=(0, 2, 3)) for batch in clean_batches]
        self.centre.copy_(torch.stack(means).mean(0))

    def training_loss(self, batch):
        loss = self._distance(batch["image"]).mean()
        return loss, {"distance": loss}

    def predict(self, images):
        anomaly_map = F.avg_pool2d(self._distance(images), 5, 1, 2)
        return anomaly_map, anomaly_map.flatten(1).amax(1)


register_model("colour", ColourDistance, settings=ColourSettings)


def _config(**overrides):
    return Config().with_overrides(
        {**SMOKE_TRAINING, "method": "colour", "colour.width": 4, **overrides}
    )


def test_the_registry_is_the_source_of_truth():
    assert "colour" in available_methods()
    config = _config()
    assert config.colour.width == 4 and config.scheduler == "constant"
    assert not config.uses_pseudo_anomalies  # the class attribute, read before building
    assert isinstance(build_model(config), ColourDistance)
    with pytest.raises(ValueError, match="already registered"):
        register_model("colour", ColourDistance)
    with pytest.raises(ValueError, match=r"colour.width must be >= 1; got 0"):
        _config(**{"colour.width": 0})
    with pytest.raises(ValueError, match=r"method must be one of .*colour.*; got 'nope'"):
        _config(method="nope")


def test_a_method_that_is_not_an_anomaly_method_is_refused():
    register_model("plain_module", lambda config: nn.Identity(), replace=True)
    with pytest.raises(TypeError, match="must subclass pagmfr.models.AnomalyMethod"):
        build_model(Config().with_overrides({"method": "plain_module"}))


@pytest.mark.slow
def test_a_user_method_trains_and_evaluates(tmp_path):
    metrics = pagmfr.train(_config(**{"data.category": "coins"}), tmp_path, callbacks=())
    assert {"image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max"} <= set(metrics)
    assert metrics["config"]["colour.width"] == 4
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    assert "loss/distance" in metrics["history"][0]
    again = pagmfr.evaluate(tmp_path / "checkpoints" / "colour_coins_best.pt")
    assert again["pixel_auroc"] == metrics["pixel_auroc"]


@pytest.mark.slow
def test_the_cli_accepts_a_registered_method(tmp_path, quick_train_args, capsys):
    assert main(quick_train_args("brick", tmp_path, "--method", "colour")) == 0
    assert "image_auroc" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(quick_train_args("brick", tmp_path, "--method", "nope"))
    assert "invalid choice: 'nope' (choose from colour" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.integration
def test_a_user_method_runs_in_a_study_on_ray_workers(tmp_path):
    """Workers have only imported pagmfr: the study ships the registration to them."""
    options = StudyOptions(
        name="user-method",
        tracking_uri=fresh_store(tmp_path),
        storage_path=str(tmp_path / "runs"),
        verbose=0,
    )
    start_local_ray(num_cpus=2)
    try:
        summary = run_ablation(
            StudyGrid(
                Config().with_overrides(SMOKE_TRAINING),
                {
                    "colour": {"method": "colour"},
                    "colour narrow": {"method": "colour", "colour.width": 2},
                },
                ["brick"],
                [0],
            ),
            options,
        )
    finally:
        ray.shutdown()
    assert (summary.trained, summary.failed) == (2, [])
    mlflow.set_tracking_uri(options.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["user-method"])
    cells = runs[runs["tags.role"] == "cell"]
    assert set(cells["status"]) == {"FINISHED"} and set(cells["tags.method"]) == {"colour"}
    assert set(cells["params.colour.width"]) == {"8", "2"}
    assert cells["metrics.pixel_auroc"].notna().all()
