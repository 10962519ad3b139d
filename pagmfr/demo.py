"""``make demo``: the main job on the embedded default, end to end on any machine.

It grows with the project: today it writes and checks the embedded dataset, previews the
pseudo-anomalies the model trains on, and trains PAGMFR briefly on one category.
"""

from __future__ import annotations

from pathlib import Path

from pagmfr.anomalies.preview import write_preview
from pagmfr.config import Config
from pagmfr.data import check_dataset, make_synthetic_dataset
from pagmfr.data.synthetic import SYNTHETIC_CATEGORIES
from pagmfr.engine import TEST_METRICS, train


def run_demo(out: Path) -> None:
    data = out / "data"
    print(f"[1/3] writing the embedded dataset to {data}")
    make_synthetic_dataset(data)
    report = check_dataset(data)
    print(report.format())
    if not report.ok:
        raise ValueError(f"the embedded dataset under {data} has problems (listed above)")

    print("[2/3] previewing the pseudo-anomalies (adaptive strategy) for each category")
    for category, spec in SYNTHETIC_CATEGORIES.items():
        image = data / category / "train" / "good" / "000.png"
        path = write_preview(
            out / "previews" / f"{category}.png",
            strategy="adaptive",
            category_kind=spec.kind,
            image=image,
            image_size=128,
        )
        print(f"  {category:<8} ({spec.kind}): {path}")
    run = out / "train_coins"
    print(f"[3/3] training PAGMFR on coins: 64 px, 3 epochs, random backbone weights -> {run}")
    config = Config().with_overrides(
        {
            "data.root": str(data),
            "data.category": "coins",
            "data.image_size": 64,
            "train.epochs": 3,
            "train.batch_size": 8,
            "backbone.weights": "none",
            "anomaly.smoothing_sigma": 1.0,
        }
    )
    metrics = train(config, run, resume=False)
    shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in TEST_METRICS)
    print(f"  test: {shown} (a pipeline check: 3 epochs without pretrained weights)")
    print(
        f"done: dataset in {data}, previews in {out / 'previews'}, "
        f"metrics in {run / 'metrics.json'}, "
        f"checkpoints in {run / 'checkpoints'}, heatmaps in {run / 'heatmaps'}"
    )
