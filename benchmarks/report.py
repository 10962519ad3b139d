"""Report speed: a real MLflow store (sqlite) holding a study of 15 categories x 10 variants x
3 seeds (450 runs with the tags, 55 params, per-epoch and final metrics a study records), then
the whole ``pagmfr report`` on it. Target: under 10 s on 2 CPUs. It prints the time of
MLflow's query alone beside the whole report, the baseline the report cannot beat.
Run: ``python benchmarks/report.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pagmfr.categories import MVTEC_AD_CATEGORIES
from pagmfr.cli import main
from pagmfr.config import Config
from pagmfr.records import CELL_RUNS
from pagmfr.study.spec import cell_name

VARIANTS = [
    "full model",
    "generator: none",
    "generator: texture",
    "generator: object",
    "backbone: layers 2-3",
    "w/o MFFM",
    "MFFM: add",
    "branch: feature only",
    "branch: image only",
    "RGPKD",
]
EPOCHS = 20


def fill(uri: str, study: str) -> int:
    client = MlflowClient(uri)
    experiment = client.create_experiment(study)
    parent = client.create_run(experiment, tags={"role": "study", "study": study}).info.run_id
    params = [Param(k, str(v)) for k, v in Config().to_flat().items()]
    rng = np.random.default_rng(0)
    count = 0
    for variant in VARIANTS:
        for category, kind in MVTEC_AD_CATEGORIES.items():
            for seed in range(3):
                tags = {
                    "role": "cell",
                    "study": study,
                    "method": "pagmfr",
                    "variant": variant,
                    "category": category,
                    "kind": kind,
                    "seed": str(seed),
                    "cell_key": f"{variant}{category}{seed}",
                    "study_run_id": parent,
                    "attempts": "1",
                }
                run = client.create_run(
                    experiment, tags=tags, run_name=cell_name(variant, category, seed)
                )
                now = int(time.time() * 1000)
                series = [
                    Metric(f"val_{m}", float(rng.random()), now, e)
                    for e in range(EPOCHS)
                    for m in ("au_pro", "pixel_auroc", "image_auroc")
                ]
                series += [
                    Metric(m, float(rng.random()), now, e)
                    for e in range(EPOCHS)
                    for m in ("loss", "lr", "epoch_seconds", "peak_memory_mb")
                ]
                final = [
                    Metric(m, float(rng.uniform(0.7, 1.0)), now, EPOCHS)
                    for m in ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max")
                ]
                client.log_batch(
                    run.info.run_id,
                    metrics=series + final,
                    params=params[:100],
                    tags=[RunTag("data_fingerprint", "f" * 32)],
                )
                client.set_terminated(run.info.run_id, "FINISHED")
                count += 1
    return count


def main_benchmark() -> None:
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        start = time.perf_counter()
        runs = fill(uri, "paper")
        print(f"filled {runs} runs in {time.perf_counter() - start:.1f} s")
        mlflow.set_tracking_uri(uri)
        start = time.perf_counter()
        mlflow.search_runs(experiment_names=["paper"], filter_string=CELL_RUNS, max_results=100_000)
        query = time.perf_counter() - start
        start = time.perf_counter()
        assert (
            main(
                [
                    "report",
                    "--tracking-uri",
                    uri,
                    "--study",
                    "paper",
                    "--out",
                    str(Path(folder) / "report"),
                ]
            )
            == 0
        )
        whole = time.perf_counter() - start
    print(f"MLflow query alone       {query:6.2f} s")
    print(
        f"whole pagmfr report      {whole:6.2f} s   ({whole / query:.1f}x the query; target < 10 s)"
    )


if __name__ == "__main__":
    main_benchmark()
