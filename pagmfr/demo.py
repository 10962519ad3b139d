"""``make demo``: the main job on the embedded default, end to end on any machine.

It writes and checks the embedded dataset and previews the pseudo-anomalies the model trains
on; ``make demo`` then runs the demo ablation study on it (studies/ablation.py), builds its
report and checks the printed component table against the README's (:func:`readme_drift`), so
that the README shows what a fresh clone prints.
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
    make_synthetic_dataset(data, overwrite=True)  # a rerun writes the same files anew
    report = check_dataset(data)
    print(report.format(per_defect=False))  # `pagmfr data check` lists every defect type
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


def readme_drift(table: Path, readme: Path) -> str | None:
    """None when every row of the Markdown ``table`` (the demo's components.md) is in
    ``readme`` as it is; else which rows are not. The demo is deterministic on a CPU, but
    another CPU's floating point may move a last digit: a difference is reported, not fatal."""
    rows = [line for line in table.read_text().splitlines() if line.startswith("|")]
    if not rows:
        return f"{table} holds no table rows"
    text = readme.read_text()
    missing = [row for row in rows if row not in text]
    if not missing:
        return None
    return (
        f"the demo's table ({table}) differs from the one in {readme}; rows not in the README:\n"
        + "\n".join(f"  {row}" for row in missing)
    )
