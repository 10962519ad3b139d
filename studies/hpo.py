"""PAGMFR hyper-parameter search.

Optuna (seeded TPE) proposes configurations, ASHA stops the unpromising ones early, and the
objective is validation AU-PRO on held-out normal images with pseudo-anomalies: the test split
is never looked at. The best configuration is exported as JSON; pass it to the ablation study
with --base-config.

  python studies/hpo.py --preset smoke
  python studies/hpo.py --preset paper --data /data/mvtec_ad --categories carpet --trials 50
"""

import sys

from pagmfr.study.cli import PAPER_TRAINING, SMOKE_TRAINING, GpusPerTrial, Preset, hpo_main


def space(trial):
    """Define-by-run search space: fusion width exists only when there is a fusion module."""
    trial.suggest_float("train.lr", 1e-4, 3e-3, log=True)
    trial.suggest_float("loss.focal", 0.5, 20.0, log=True)
    trial.suggest_float("loss.focal_gamma", 0.5, 4.0)
    trial.suggest_float("loss.feature", 0.1, 2.0, log=True)
    trial.suggest_categorical("generator.blend", ["0.0,0.8", "0.2,0.8", "0.5,0.9"])
    trial.suggest_categorical("backbone.layers", ["1,2,3", "2,3"])
    if trial.suggest_categorical("fusion.mode", ["concat", "add", "none"]) != "none":
        trial.suggest_categorical("fusion.channels", [32, 64, 128])


PRESETS = {
    "smoke": Preset(
        data="synthetic", categories=["brick"], seeds=[0], trials=3, overrides=SMOKE_TRAINING
    ),
    "paper": Preset(
        categories=["carpet"],
        seeds=[0],
        trials=50,
        overrides={**PAPER_TRAINING, "train.epochs": 200},
        gpus_per_trial=GpusPerTrial(0.25),  # as the ablation's paper preset
    ),
}

if __name__ == "__main__":
    sys.exit(hpo_main(space, PRESETS, __doc__))
