"""``make demo``: the main job on the embedded default, end to end on any machine.

It writes and checks the embedded dataset and previews the pseudo-anomalies the model trains
on; ``make demo`` then runs the smoke ablation study on it (studies/ablation.py).
"""

from __future__ import annotations

from pathlib import Path

from pagmfr.anomalies.preview import write_preview
from pagmfr.data import check_dataset, make_synthetic_dataset
from pagmfr.data.synthetic import SYNTHETIC_CATEGORIES


def run_demo(out: Path) -> None:
    """Write and check the embedded dataset under ``out/data`` and preview its pseudo-anomalies."""
    data = out / "data"
    print(f"[1/2] writing the embedded dataset to {data}")
    make_synthetic_dataset(data)
    report = check_dataset(data)
    print(report.format())
    if not report.ok:
        raise ValueError(f"the embedded dataset under {data} has problems (listed above)")

    print("[2/2] previewing the pseudo-anomalies (adaptive strategy) for each category")
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
    print(f"done: dataset in {data}, previews in {out / 'previews'}")
