"""Detection quality of every method on the embedded dataset, PatchCore measured in the same run.

Each method trains (PatchCore: fits) on every embedded category at 128 px with random backbone
weights (the only weights an offline machine has) under a fixed CPU budget per method, for
several seeds, through the same engine as ``pagmfr train``: selection on validation, then the
test split. It prints image AUROC, pixel AUROC, AU-PRO and pixel F1-max per category and their
mean over categories as mean +- std over seeds, with each method's difference to PatchCore.

  python benchmarks/quality.py                          # every method, 4 categories, 3 seeds
  python benchmarks/quality.py --methods patchcore pagmfr --seeds 0 --jobs 2
  python benchmarks/quality.py --methods pagmfr --set anomaly.knn=false --tag no-knn
  python benchmarks/quality.py --methods pagmfr --categories brick coffee --seeds 0 --curve

``--curve`` also measures the test split after every epoch and prints the learning curve (the
mean over categories per epoch): for reading how quality grows with the budget only; the
selected epoch is still chosen on validation. Cells are kept in
``--out/<tag>/<method>/<category>_s<seed>.json``: an interrupted run resumes. It is a
benchmark, not a test: about 3-4 CPU-minutes per trained cell.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import one_core  # noqa: E402

METRICS = ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max")
#: The CPU budget: epochs per method at 128 px (a few CPU-minutes per cell on one core).
BUDGET = {"pagmfr": 25, "rgpkd": 15}
BASE = {
    "data.root": "synthetic",
    "data.image_size": 128,
    "backbone.weights": "none",
    "train.batch_size": 8,
    "data.num_workers": 0,
}


def test_each_epoch(config, curve: list[dict]):
    """A per-epoch callback appending the test metrics of the epoch's model to ``curve``."""
    import torch
    from patchcore import split_tensors

    from pagmfr.data.pipeline import resolve_data_root
    from pagmfr.engine import anomaly_metrics, infer

    data = config.data
    test = split_tensors(resolve_data_root(data.root), data.category, "test", data.image_size)
    masks, labels = test["mask"][:, 0].numpy() > 0.5, test["label"].numpy()

    def callback(report) -> None:
        maps, scores = infer(report.model, test["image"].split(16), torch.device("cpu"), False)
        curve.append({"epoch": report.epoch, **anomaly_metrics(maps, masks, scores, labels)})
        report.model.train()

    return callback


def run_cell(job: tuple[str, str, int, dict[str, str], str, bool]) -> dict:
    """Train (or fit) one method on one category and seed; its test metrics and CPU time."""
    method, category, seed, overrides, out, with_curve = job
    path = Path(out) / method / f"{category}_s{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    one_core()
    import torch

    torch.set_num_threads(1)
    from pagmfr.config import Config
    from pagmfr.engine import train

    values = {**BASE, "method": method, "data.category": category, "train.seed": seed}
    if method in BUDGET:
        values["train.epochs"] = BUDGET[method]
    values.update(overrides)
    config = Config().with_overrides(values)
    curve: list[dict] = []
    callbacks = (test_each_epoch(config, curve),) if with_curve else ()
    started = time.process_time()
    with tempfile.TemporaryDirectory() as folder:
        metrics = train(config, folder, callbacks=callbacks)
    result = {
        "method": method,
        "category": category,
        "seed": seed,
        "overrides": values,
        "test": {k: float(metrics[k]) for k in METRICS},
        "best_epoch": metrics.get("best_epoch"),
        "cpu_seconds": time.process_time() - started,
        "curve": curve,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    t = result["test"]
    print(
        f"  {method:>9} {category:>7} s{seed}: image {t['image_auroc']:.3f} pixel "
        f"{t['pixel_auroc']:.3f} AU-PRO {t['au_pro']:.3f}  ({result['cpu_seconds']:.0f} CPU-s)",
        flush=True,
    )
    return result


def table(results: list[dict], methods: list[str], categories: list[str]) -> str:
    """Per category and mean over categories; each entry mean +- std over seeds."""
    by = {(r["method"], r["category"], r["seed"]): r["test"] for r in results}
    seeds = sorted({r["seed"] for r in results})
    lines = [
        "| method | category | " + " | ".join(METRICS) + " | CPU-s/cell |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    cpu = {m: np.mean([r["cpu_seconds"] for r in results if r["method"] == m]) for m in methods}

    def row(method: str, label: str, values: dict[str, list[float]], extra: str = "") -> str:
        cells = [f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in values.values()]
        return f"| {method} | {label} | " + " | ".join(cells) + f" | {extra} |"

    means: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        for category in categories:
            values = {k: [by[method, category, s][k] for s in seeds] for k in METRICS}
            lines.append(row(method, category, values))
        means[method] = {
            k: [np.mean([by[method, c, s][k] for c in categories]) for s in seeds] for k in METRICS
        }
        lines.append(row(method, "**mean**", means[method], f"{cpu[method]:.0f}"))
    if any(r.get("curve") for r in results):
        lines += [
            "",
            "learning curve (test, mean over categories and seeds; not used for selection):",
        ]
        for method in methods:
            curves = [r["curve"] for r in results if r["method"] == method and r.get("curve")]
            for epoch in range(min(len(c) for c in curves) if curves else 0):
                values = {k: np.mean([c[epoch][k] for c in curves]) for k in METRICS[:3]}
                lines.append(
                    f"  {method} epoch {curves[0][epoch]['epoch'] + 1}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in values.items())
                )
    if "patchcore" in means:
        lines.append("")
        lines.append("mean over categories minus PatchCore's (per seed, then mean):")
        for method in methods:
            if method == "patchcore":
                continue
            gaps = [
                f"{k} {np.mean(np.subtract(means[method][k], means['patchcore'][k])):+.3f}"
                for k in METRICS
            ]
            lines.append(f"  {method}: " + ", ".join(gaps))
    return "\n".join(lines)


def main() -> None:
    from pagmfr.data import SYNTHETIC_CATEGORIES
    from pagmfr.models.registry import available_methods

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(available_methods()))
    parser.add_argument("--categories", nargs="+", default=list(SYNTHETIC_CATEGORIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once, 1 core each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tag", default="defaults", help="names this run's folder of cells")
    parser.add_argument("--curve", action="store_true", help="test after every epoch too")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "pagmfr-quality"))
    args = parser.parse_args()
    overrides = dict(pair.split("=", 1) for pair in args.set)
    out = Path(args.out) / args.tag
    jobs = [
        (m, c, s, {} if m == "patchcore" else overrides, str(out), args.curve)
        for s in args.seeds
        for m in args.methods
        for c in args.categories
    ]
    print(f"{len(jobs)} cells ({args.jobs} at a time), kept in {out}", flush=True)
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_cell, jobs, chunksize=1)
    else:
        results = [run_cell(job) for job in jobs]
    print(table(results, args.methods, args.categories))


if __name__ == "__main__":
    main()
