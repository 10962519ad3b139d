"""The study harness's own overhead: N short real trials (1 epoch, 64 px, embedded data) run
directly through pagmfr.train and through the study layer (Ray Tune + MLflow records), one at a
time so parallelism cannot hide overhead. Prints both wall times, their ratio and the overhead
per trial (target: at most 2 s). Run: ``python benchmarks/harness.py [--trials 6]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402

from pagmfr.config import Config  # noqa: E402
from pagmfr.engine import train  # noqa: E402
from pagmfr.study import StudyGrid, StudyOptions, run_ablation, start_local_ray  # noqa: E402
from pagmfr.study.presets import QUICK_TRAINING  # noqa: E402

QUICK = {**QUICK_TRAINING, "train.epochs": 1, "data.category": "brick"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    base = Config().with_overrides(QUICK)
    seeds = list(range(args.trials))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        train(base, folder / "warm-up", callbacks=())  # data written, caches and imports warm
        start = time.perf_counter()
        for seed in seeds:
            train(base.with_overrides({"train.seed": seed}), folder / f"direct{seed}", callbacks=())
        direct = time.perf_counter() - start

        start = time.perf_counter()
        start_local_ray(num_cpus=2)  # this machine only, on loopback
        startup = time.perf_counter() - start
        options = StudyOptions(
            name="overhead",
            tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
            storage_path=str(folder / "runs"),
            cpus_per_trial=1,
            max_concurrent_trials=1,
            verbose=0,
        )
        start = time.perf_counter()
        summary = run_ablation(StudyGrid(base, {"full model": {}}, ["brick"], seeds), options)
        study = time.perf_counter() - start
        ray.shutdown()
    assert summary.trained == args.trials, summary.describe()
    per_trial = (study - direct) / args.trials
    print(f"{args.trials} trials of 1 epoch, one at a time")
    print(f"direct (pagmfr.train)        {direct:7.1f} s")
    print(f"study layer (Tune + MLflow)  {study:7.1f} s   ratio {study / direct:.2f}x")
    print(
        f"overhead per trial           {per_trial:7.2f} s   (target <= 2 s); "
        f"Ray start-up once: {startup:.1f} s"
    )


if __name__ == "__main__":
    main()
