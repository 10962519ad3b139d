"""The report builder on a real MLflow store filled with known metrics."""

import shutil
import subprocess
import time

import pandas as pd
import pytest
from scipy.stats import wilcoxon

from pagmfr.cli import main
from pagmfr.report import report_folders, report_study
from pagmfr.study.tracking import StudyTracker

REF, WO, OTHER = "full model", "w/o_MFFM 50%", "other"
# au_pro per (variant, category) for seeds 0 and 1; None: no finished run
AU_PRO = {
    REF: {
        "carpet": (0.90, 0.92),
        "grid": (0.80, 0.82),
        "bottle": (0.95, 0.97),
        "cable": (0.70, 0.74),
    },
    WO: {
        "carpet": (0.85, 0.87),
        "grid": (0.82, 0.80),
        "bottle": (0.95, 0.97),
        "cable": (0.60, 0.66),
    },
    OTHER: {"carpet": (0.91, 0.93), "grid": None, "bottle": (0.50, 0.50), "cable": (0.80, 0.80)},
}
KINDS = {"carpet": "texture", "grid": "texture", "bottle": "object", "cable": "object"}


def _record(tracker, variant, category, seed, value, key_suffix="", status="FINISHED"):
    spec = {
        "key": f"{variant}-{category}-{seed}{key_suffix}",
        "variant": variant,
        "category": category,
        "seed": seed,
        "kind": KINDS[category],
        "method": "pagmfr",
        "fingerprint": "f",
        "config": {"method": "pagmfr", "data.category": category},
    }
    run_id = tracker.open_cell(spec)
    if status == "FAILED":
        tracker.fail(run_id, "Traceback ...\nValueError: broken image 005.png")
        return
    tracker.log_metrics(run_id, {"au_pro": value, "image_auroc": value / 2}, step=1)
    tracker.finish(run_id)
    time.sleep(0.01)  # distinct end times


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = StudyTracker(uri, "known")
    _record(tracker, REF, "carpet", 0, 0.10, key_suffix="-restored")  # an older duplicate
    for variant, per_category in AU_PRO.items():
        for category, values in per_category.items():
            if values is None:
                _record(tracker, variant, category, 0, None, status="FAILED")  # seed 1: never run
                continue
            for seed, value in enumerate(values):
                _record(tracker, variant, category, seed, value)
    return uri


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    return report_study(store, "known", tmp_path_factory.mktemp("report"), metrics=["au_pro"])


def _cells(report):
    table = report.tables[0]
    return table, {row.label: row.values for row in table.rows}


def test_rows_columns_and_order(report):
    table, _ = _cells(report)
    assert table.variants == [REF, WO, OTHER]
    assert [row.label for row in table.rows] == [
        "carpet",
        "grid",
        "bottle",
        "cable",
        "Textures mean",
        "Objects mean",
        "Mean",
    ]


@pytest.mark.parametrize(
    ("row", "variant", "mean", "std", "delta", "best"),
    [
        ("carpet", REF, 91.0, 1.414, None, False),
        ("carpet", WO, 86.0, 1.414, -5.0, False),
        ("carpet", OTHER, 92.0, 1.414, 1.0, True),
        ("grid", REF, 81.0, 1.414, None, True),
        ("grid", WO, 81.0, 1.414, 0.0, True),  # a tie: both bold
        ("bottle", OTHER, 50.0, 0.0, -46.0, False),
        ("cable", REF, 72.0, 2.828, None, False),
        ("cable", WO, 63.0, 4.243, -9.0, False),
        ("cable", OTHER, 80.0, 0.0, 8.0, True),
        ("Textures mean", REF, 86.0, 1.414, None, True),
        ("Textures mean", WO, 83.5, 0.0, -2.5, False),
        ("Objects mean", REF, 84.0, 2.121, None, True),
        ("Objects mean", WO, 79.5, 2.828, -4.5, False),
        ("Objects mean", OTHER, 65.0, 0.0, -19.0, False),
        ("Mean", REF, 85.0, 1.768, None, True),
        ("Mean", WO, 81.5, 1.414, -3.5, False),
    ],
)
def test_every_cell_against_hand_computed_values(report, row, variant, mean, std, delta, best):
    _, cells = _cells(report)
    value = cells[row][variant]
    assert value.mean == pytest.approx(mean)
    assert value.std == pytest.approx(std, abs=1e-3)
    assert (value.delta is None) == (delta is None)
    if delta is not None:
        assert value.delta == pytest.approx(delta)
    assert value.best == best


def test_missing_and_failed_cells_show_as_dashes_and_are_listed(report):
    _, cells = _cells(report)
    assert cells["grid"][OTHER] is None
    assert cells["Textures mean"][OTHER] is None and cells["Mean"][OTHER] is None
    states = {(m.variant, m.category, m.seed): (m.state, m.error) for m in report.missing}
    assert states == {
        (OTHER, "grid", 0): ("FAILED", "ValueError: broken image 005.png"),
        (OTHER, "grid", 1): ("not run", ""),
    }
    text = next(p for p in report.files if p.name == "report.md").read_text()
    assert "| grid | **81.0 ± 1.4** | **81.0 ± 1.4** (+0.0) | – |" in text
    assert f"- {OTHER} / grid / seed 0: FAILED (ValueError: broken image 005.png)" in text
    assert f"- {OTHER} / grid / seed 1: not run" in text


def test_duplicates_are_dropped_keeping_the_latest(report):
    assert report.duplicates_dropped == 1
    runs = pd.read_csv(next(p for p in report.files if p.name == "runs.csv"))
    assert len(runs) == 22 + 1 + 1 and runs["kept"].sum() == 22  # finished, failed, duplicate
    assert {"params.data.category", "tags.cell_key", "au_pro"} <= set(runs.columns)


def test_paired_wilcoxon_against_the_reference(report):
    table, _ = _cells(report)
    test = next(t for t in table.tests if t.variant == WO)
    expected = wilcoxon([86.0, 81.0, 96.0, 63.0], [91.0, 81.0, 96.0, 72.0])
    assert test.categories == 4 and test.mean_delta == pytest.approx(-3.5)
    assert test.p_value == pytest.approx(expected.pvalue)
    assert next(t for t in table.tests if t.variant == OTHER).categories == 3


@pytest.mark.integration
def test_latex_is_escaped_and_compiles_when_tex_is_present(report, tmp_path):
    tex = next(p for p in report.files if p.suffix == ".tex").read_text()
    assert r"w/o\_MFFM 50\%" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"\textbf{92.0\,$\pm$\,1.4} {\scriptsize(+1.0)}" in tex
    engine = shutil.which("pdflatex")
    if engine is None:
        pytest.skip("no TeX engine on this machine")
    document = tmp_path / "doc.tex"
    document.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
        + tex
        + "\\end{document}\n"
    )
    subprocess.run(
        [engine, "-interaction=nonstopmode", document.name],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )


@pytest.mark.integration
def test_html_is_self_contained_and_renders_when_chromium_is_present(report, tmp_path):
    page = next(p for p in report.files if p.suffix == ".html")
    text = page.read_text()
    assert text.count("<h2 id='au_pro'>") == 1 and text.count("<table>") == 2
    assert "src='data:image/png;base64," in text and "http" not in text
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("no chromium on this machine")
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000


def test_bad_input_is_named(store, tmp_path, capsys):
    args = ["report", "--tracking-uri", store, "--out", str(tmp_path)]
    assert main([*args, "--study", "unknown"]) == 2
    assert (
        "no study 'unknown' in" in (err := capsys.readouterr().err)
        and "studies there: known" in err
    )
    assert main([*args, "--study", "known", "--metrics", "pixel_recall"]) == 2
    assert "no finished run has metric 'pixel_recall'; recorded: au_pro" in capsys.readouterr().err
    assert (
        main(
            [
                "report",
                "--tracking-uri",
                "http://127.0.0.1:9",
                "--study",
                "known",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert (
        "cannot reach the MLflow tracking server at http://127.0.0.1:9" in capsys.readouterr().err
    )
    assert (
        main(
            [
                "report",
                "--tracking-uri",
                f"sqlite:///{tmp_path / 'none.db'}",
                "--study",
                "x",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no MLflow store at" in capsys.readouterr().err


@pytest.mark.slow
def test_report_over_stand_alone_training_folders(tmp_path, quick_train_args):
    run = tmp_path / "run"
    assert main(quick_train_args("gravel", run)) == 0
    report = report_folders([run], tmp_path / "report", metrics=["au_pro", "pixel_auroc"])
    table = report.tables[0]
    assert table.variants == ["pagmfr"] and [r.label for r in table.rows][0] == "gravel"
    metrics = pd.read_json(run / "metrics.json", typ="series")
    assert table.rows[0].values["pagmfr"].mean == pytest.approx(100 * metrics["au_pro"])
