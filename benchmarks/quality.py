"""Detection quality of every method, PatchCore measured in the same run, on the embedded
dataset or on any MVTec AD-layout root (real data too).

Each method trains (PatchCore: fits) on every category at 224 px with ImageNet EfficientNet-
Lite0 (the default backbone) under a fixed budget per method (20 epochs of batch 8, as the
acceptance runs), for several seeds, through the same engine as ``pagmfr train`` (the default
selection protocol, then the test split). It prints image AUROC, pixel AUROC, AU-PRO and pixel
F1-max per category and their mean over categories as mean +- std over seeds, with each
method's difference to PatchCore.

  python benchmarks/quality.py                          # every method, 4 categories, 3 seeds
  python benchmarks/quality.py --data ../shared/data/mvtec_ad_256 --categories transistor
  python benchmarks/quality.py --methods patchcore pagmfr --seeds 0 --jobs 2
  python benchmarks/quality.py --methods pagmfr --set anomaly.knn=false --tag no-knn
  python benchmarks/quality.py --methods pagmfr rgpkd --curve --tag curves

``--curve`` also measures, after every epoch, the test split and the validation set of every
family in ``--families`` (each as ``validation.strategy`` would build it), and prints the
learning curve and the selection comparison: for each protocol (the last epoch, or the best
epoch on a validation metric of a family), the selected epoch's test metrics, and how far they
fall from the best test epoch (an oracle: a diagnosis, never a protocol) and from the last
epoch. Cells are kept in ``--out/<tag>/<method>/<category>_s<seed>.json``: an interrupted run
resumes. It is a benchmark, not a test: minutes of CPU per trained cell.
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
SELECTED = METRICS[:3]  # what selection may choose on, and what the comparison shows
#: The budget: epochs per method (tens of CPU-minutes per transistor cell on one core).
BUDGET = {"pagmfr": 20, "rgpkd": 20}
BASE = {"data.image_size": 224, "data.num_workers": 0}


def measure_each_epoch(config, families: list[str], curve: list[dict]):
    """A per-epoch callback appending the epoch's test metrics and the validation metrics of
    every family in ``families`` to ``curve``."""
    import torch
    from patchcore import split_tensors

    from pagmfr.data.pipeline import resolve_data_root
    from pagmfr.engine import anomaly_metrics, infer, prepare_training

    data, cpu = config.data, torch.device("cpu")
    test = split_tensors(resolve_data_root(data.root), data.category, "test", data.image_size)
    sets = {"test": (test["image"], test["mask"][:, 0].numpy() > 0.5, test["label"].numpy())}
    for family in families:
        setup = prepare_training(config.with_overrides({"validation.strategy": family}))
        sets[family] = (setup.images, setup.masks, setup.labels)

    def callback(report) -> None:
        row = {"epoch": report.epoch}
        for name, (images, masks, labels) in sets.items():
            maps, scores = infer(report.model, images.split(16), cpu, False)
            row[name] = anomaly_metrics(maps, masks, scores, labels)
        curve.append(row)
        report.model.train()

    return callback


def run_cell(job: tuple) -> dict:
    """Train (or fit) one method on one category and seed; its test metrics and CPU time."""
    method, category, seed, overrides, out, families = job
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
    trains = method in BUDGET
    callbacks = (measure_each_epoch(config, families, curve),) if families and trains else ()
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
        "selection": metrics.get("selection_protocol"),
        "cpu_seconds": time.process_time() - started,
        "curve": curve,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    t = result["test"]
    print(
        f"  {method:>9} {category:>10} s{seed}: image {t['image_auroc']:.3f} pixel "
        f"{t['pixel_auroc']:.3f} AU-PRO {t['au_pro']:.3f}  ({result['cpu_seconds']:.0f} CPU-s)",
        flush=True,
    )
    return result


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(results: list[dict], methods: list[str], categories: list[str]) -> str:
    """Per category and mean over categories; each entry mean +- std over seeds."""
    by = {(r["method"], r["category"], r["seed"]): r["test"] for r in results}
    seeds = sorted({r["seed"] for r in results})
    lines = [
        "| method | category | " + " | ".join(METRICS) + " | CPU-s/cell |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    cpu = {m: np.mean([r["cpu_seconds"] for r in results if r["method"] == m]) for m in methods}
    means: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        for category in categories:
            cells = [_mean_std([by[method, category, s][k] for s in seeds]) for k in METRICS]
            lines.append(f"| {method} | {category} | " + " | ".join(cells) + " | |")
        means[method] = {
            k: [np.mean([by[method, c, s][k] for c in categories]) for s in seeds] for k in METRICS
        }
        cells = [_mean_std(means[method][k]) for k in METRICS]
        lines.append(f"| {method} | **mean** | " + " | ".join(cells) + f" | {cpu[method]:.0f} |")
    protocols = sorted({r["selection"] for r in results if r["method"] in BUDGET})
    lines.append(f"selection protocol: {', '.join(p or '?' for p in protocols)}")
    if "patchcore" in means:
        lines += ["", "mean over categories minus PatchCore's (per seed, then mean):"]
        for method in methods:
            if method == "patchcore":
                continue
            gaps = [
                f"{k} {np.mean(np.subtract(means[method][k], means['patchcore'][k])):+.3f}"
                for k in METRICS
            ]
            lines.append(f"  {method}: " + ", ".join(gaps))
    return "\n".join(lines)


def learning_curve(results: list[dict], methods: list[str]) -> list[str]:
    """Test metrics per epoch, mean over categories and seeds (not used for selection)."""
    lines = ["", "learning curve (test, mean over categories and seeds; not used for selection):"]
    for method in methods:
        curves = [r["curve"] for r in results if r["method"] == method and r["curve"]]
        for epoch in range(min(len(c) for c in curves) if curves else 0):
            values = {k: np.mean([c[epoch]["test"][k] for c in curves]) for k in SELECTED}
            lines.append(
                f"  {method} epoch {epoch + 1}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in values.items())
            )
    return lines


def selected_epoch(curve: list[dict], protocol: str) -> int:
    """The epoch ``protocol`` tests: ``last``, or ``val_<metric>@<family>``'s first best."""
    if protocol == "last":
        return len(curve) - 1
    metric, family = protocol.removeprefix("val_").split("@")
    values = [row[family][metric] for row in curve]
    return int(np.argmax(values))


def _tracking(curves: list[list[dict]], protocol: str) -> str:
    """How the protocol's validation metric tracks the same test metric over the epochs:
    Spearman's rank correlation within each cell, mean over cells (how an HPO objective that
    compares configurations by it would rank them, as far as epochs can tell)."""
    from scipy.stats import spearmanr

    metric, family = protocol.removeprefix("val_").split("@")
    rhos = []
    for curve in curves:
        rho = spearmanr([r[family][metric] for r in curve], [r["test"][metric] for r in curve])[0]
        if np.isfinite(rho):
            rhos.append(rho)
    return f"{np.mean(rhos):+.2f}" if rhos else "–"


def selection_comparison(results: list[dict], methods: list[str], families: list[str]) -> list:
    """Each protocol's selected test metrics (mean over every cell of a method), minus the
    oracle's (each cell's best test epoch, per metric) and minus the last epoch's, and how its
    validation metric tracks the test metric over the epochs."""
    protocols = ["last"] + [f"val_{m}@{f}" for f in families for m in SELECTED]
    header = " | ".join(f"{k} | −oracle | −last" for k in SELECTED) + " | tracks test"
    lines = ["", "selection comparison (test metrics of the selected epoch; mean over cells):"]
    for method in methods:
        curves = [r["curve"] for r in results if r["method"] == method and r["curve"]]
        if not curves:
            continue
        lines += ["", f"{method} ({len(curves)} cells)", f"| protocol | {header} |"]
        lines.append("|---|" + "---|---|---|" * len(SELECTED) + "---|")
        oracle = {k: np.mean([max(row["test"][k] for row in c) for c in curves]) for k in SELECTED}
        tracking = {p: _tracking(curves, p) for p in protocols[1:]}
        last = {k: np.mean([c[-1]["test"][k] for c in curves]) for k in SELECTED}
        for protocol in protocols:
            chosen = [c[selected_epoch(c, protocol)]["test"] for c in curves]
            mean = {k: np.mean([t[k] for t in chosen]) for k in SELECTED}
            cells = " | ".join(
                f"{mean[k]:.3f} | {mean[k] - oracle[k]:+.3f} | {mean[k] - last[k]:+.3f}"
                for k in SELECTED
            )
            lines.append(f"| {protocol} | {cells} | {tracking.get(protocol, '')} |")
    return lines


def main() -> None:
    from pagmfr.data import SYNTHETIC_CATEGORIES, list_categories
    from pagmfr.data.pipeline import SYNTHETIC, resolve_data_root
    from pagmfr.registry import available_methods

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=SYNTHETIC, help="an MVTec AD-layout root")
    parser.add_argument("--methods", nargs="+", default=list(available_methods()))
    parser.add_argument("--categories", nargs="+", help="default: every category of --data")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once, 1 core each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tag", default="defaults", help="names this run's folder of cells")
    parser.add_argument("--curve", action="store_true", help="measure every epoch too")
    parser.add_argument(
        "--families",
        nargs="+",
        default=["defects", "adaptive", "defects+adaptive"],
        help="validation families measured with --curve",
    )
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "pagmfr-quality"))
    args = parser.parse_args()
    categories = args.categories or (
        list(SYNTHETIC_CATEGORIES)
        if args.data == SYNTHETIC
        else list_categories(resolve_data_root(args.data))
    )
    common = {"data.root": args.data, "train.batch_size": args.batch_size}
    trained = {**common, **dict(pair.split("=", 1) for pair in args.set)}  # --set: trained only
    families = args.families if args.curve else []
    out = Path(args.out) / args.tag
    jobs = [
        (m, c, s, trained if m in BUDGET else common, str(out), families)
        for s in args.seeds
        for m in args.methods
        for c in categories
    ]
    print(f"{len(jobs)} cells ({args.jobs} at a time), kept in {out}", flush=True)
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_cell, jobs, chunksize=1)
    else:
        results = [run_cell(job) for job in jobs]
    lines = [table(results, args.methods, categories)]
    if args.curve:
        lines += learning_curve(results, args.methods)
        lines += selection_comparison(results, args.methods, families)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
