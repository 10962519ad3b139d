"""The report builder on a real MLflow store filled with known metrics and a declared grid."""

import json
import math
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import compile_latex, fresh_store, page_text, render_dom
from mlflow.tracking import MlflowClient
from scipy.stats import wilcoxon

from pagmfr.categories import MVTEC_AD_CATEGORIES
from pagmfr.cli import main
from pagmfr.report import build_report, report_folders, report_study
from pagmfr.report.tables import holm
from pagmfr.study.spec import TrialSpec
from pagmfr.study.tracking import StudyTracker

REF, WO, OTHER, NEVER = "full model", "w/o_MFFM 50%", "other", "never started"
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
DECLARED = [REF, OTHER, WO, NEVER]  # recorded in another order: REF, WO, OTHER


def _spec(variant, category, seed, code="code-now"):
    key = f"{variant}-{category}-{seed}"
    return TrialSpec(
        key=key if code == "code-now" else f"{key}-{code}",
        config_key=f"config-{key}",
        code=code,
        variant=variant,
        category=category,
        seed=seed,
        kind=KINDS[category],
        method="pagmfr",
        overrides="fusion.mode=none" if variant == WO else "(base config)",
        fingerprint="f",
        config={
            "method": "pagmfr",
            "data.category": category,
            # an earlier version's keys: the report reads them as today's choice
            **(
                {"validation.metric": "au_pro"}
                if variant == OTHER
                else {"validation.select": "last", "validation.strategy": "defects"}
            ),
        },
    )


def _record(tracker, spec, value, status="FINISHED", version=None):
    run_id = tracker.open_cell(spec)
    if version:
        tracker.client.set_tag(run_id, "code_version", version)
    if status == "FAILED":
        tracker.fail(run_id, "Traceback ...\nValueError: broken image 005.png")
        return run_id
    tracker.log_metrics(run_id, {"au_pro": value, "image_auroc": value / 2}, step=1)
    tracker.finish(run_id)
    time.sleep(0.01)  # distinct end times
    return run_id


def _grid(variants, categories=KINDS, seeds=(0, 1)):
    cells = [
        {"variant": v, "category": c, "seed": s, "key": _spec(v, c, s).key}
        | {"config_key": _spec(v, c, s).config_key}
        for v in variants
        for c in categories
        for s in seeds
    ]
    return {
        "variants": [{"name": v, "overrides": ""} for v in variants],
        "categories": [{"name": c, "kind": KINDS[c]} for c in categories],
        "seeds": list(seeds),
        "cells": cells,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    uri = fresh_store(folder)
    tracker = StudyTracker(uri, "known")
    for variant, per_category in AU_PRO.items():
        for category, values in per_category.items():
            if values is None:
                _record(tracker, _spec(variant, category, 0), None, status="FAILED")
                continue
            for seed, value in enumerate(values):
                _record(tracker, _spec(variant, category, seed), value)
    # The same cell under older code, finished last: never mixed into the table.
    _record(tracker, _spec(WO, "carpet", 0, code="code-old"), 0.10, version="0.0.9+gold")
    # An older finished copy of a cell (same key), as a restored trial once left.
    original = tracker.client.get_run(tracker.cell_runs()[_spec(REF, "carpet", 0).key].info.run_id)
    copy = tracker.client.create_run(tracker.experiment_id, tags=original.data.tags).info.run_id
    tracker.log_metrics(copy, {"au_pro": 0.10}, step=1)
    tracker.client.set_terminated(copy, "FINISHED", end_time=original.info.end_time - 1000)
    tracker.declare_grid(_grid(DECLARED))
    return uri


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    return report_study(
        store, "known", tmp_path_factory.mktemp("report"), metrics=["au_pro", "image_auroc"]
    )


def _cells(report):
    table = report.tables[0]
    return table, {row.label: row.values for row in table.rows}


def _file(report, name):
    return next(p for p in report.files if p.name == name)


def test_columns_follow_the_declared_grid_and_rows_the_kinds(report):
    table, _ = _cells(report)
    assert table.variants == DECLARED
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
        ("carpet", WO, 86.0, 1.414, -5.0, False),  # the older code's 10.0 is not mixed in
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


def test_every_declared_cell_without_a_finished_run_is_listed(report):
    _, cells = _cells(report)
    assert cells["grid"][OTHER] is None and cells["carpet"][NEVER] is None
    assert cells["Textures mean"][OTHER] is None and cells["Mean"][OTHER] is None
    states = {(m.variant, m.category, m.seed): (m.state, m.error) for m in report.missing}
    never = {(NEVER, c, s): ("not run", "") for c in KINDS for s in (0, 1)}
    assert states == {
        (OTHER, "grid", 0): ("FAILED", "ValueError: broken image 005.png"),
        (OTHER, "grid", 1): ("not run", ""),
        **never,
    }
    text = _file(report, "report.md").read_text()
    assert "| grid | **81.0 ± 1.4** | – | **81.0 ± 1.4** (+0.0) | – |" in text
    assert f"- {OTHER} / grid / seed 0: FAILED (ValueError: broken image 005.png)" in text
    assert f"- {NEVER} / cable / seed 1: not run" in text
    assert "Cells: the grid the study declared (4 variants x 4 categories x 2 seed(s))." in text


def test_duplicates_of_a_cell_key_are_dropped_keeping_the_latest(report):
    assert report.duplicates_dropped == 1
    runs = pd.read_csv(_file(report, "runs.csv"))
    # 22 finished, 1 failed, 1 duplicate, 1 of older code
    assert len(runs) == 25 and runs["kept"].sum() == 22
    assert {"params.data.category", "tags.cell_key", "au_pro"} <= set(runs.columns)


def test_paired_wilcoxon_with_holm_against_the_reference(report):
    table, _ = _cells(report)
    test = table.test(WO)
    expected = wilcoxon([86.0, 81.0, 96.0, 63.0], [91.0, 81.0, 96.0, 72.0])
    assert test.pairs == 4 and test.mean_delta == pytest.approx(-3.5)
    assert test.p_value == pytest.approx(expected.pvalue)
    assert test.p_holm == pytest.approx(min(1.0, 2 * expected.pvalue))
    assert table.test(OTHER).pairs == 3 and table.test(NEVER).pairs == 0


def test_holm_step_down_matches_the_textbook():
    from pagmfr.report.tables import PairedTest

    tests = holm(
        [PairedTest(v, 7, 0.0, 0.0, p) for v, p in (("a", 0.01), ("b", 0.04), ("c", 0.03))]
    )
    assert [round(t.p_holm, 6) for t in tests] == [0.03, 0.06, 0.06]
    assert [t.mark for t in tests] == ["*", "", ""]


def test_components_match_the_mlflow_runs(report, store):
    """components.csv against the runs as MLflow holds them, computed independently."""
    mlflow.set_tracking_uri(store)
    raw = mlflow.search_runs(experiment_names=["known"], filter_string="tags.role = 'cell'")
    grid = {(v, c, s) for v in (REF, WO) for c in KINDS for s in (0, 1)}
    declared = {_spec(v, c, s).key for v, c, s in grid}
    runs = raw[raw["tags.cell_key"].isin(declared) & (raw["status"] == "FINISHED")]
    runs = runs.sort_values("end_time").drop_duplicates("tags.cell_key", keep="last")
    components = pd.read_csv(_file(report, "components.csv")).set_index(["variant", "metric"])
    for variant in (REF, WO):
        for metric in ("au_pro", "image_auroc"):
            mine = runs[runs["tags.variant"] == variant]
            per_category = mine.groupby("tags.category")[f"metrics.{metric}"].mean()
            per_seed = mine.groupby("tags.seed")[f"metrics.{metric}"].mean()
            row = components.loc[(variant, metric)]
            assert row["mean"] == pytest.approx(100 * per_category.mean())
            assert row["std"] == pytest.approx(100 * per_seed.std(ddof=1))
            assert row["categories"] == 4
    assert components.loc[(WO, "au_pro"), "delta"] == pytest.approx(-3.5)
    assert math.isnan(components.loc[(OTHER, "au_pro"), "mean"])  # a category is missing
    markdown = _file(report, "components.md").read_text()
    assert "| w/o\\_MFFM 50% | 81.5 ± 1.4 | −3.5 | 40.8 ± 0.7 | −1.8 |" in markdown


def test_another_code_version_is_reported_only_on_request(store, tmp_path):
    report = report_study(
        store, "known", tmp_path, metrics=["au_pro"], code_version="0.0.9+gold", formats=["md"]
    )
    _, cells = _cells(report)
    assert cells["carpet"][WO].mean == pytest.approx(10.0) and cells["carpet"][REF] is None
    assert "Code: 0.0.9+gold (1 runs)." in _file(report, "report.md").read_text()


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """A study whose grid keeps a cell of older code (as --keep-old-results declares it)."""
    uri = fresh_store(tmp_path_factory.mktemp("mixed"))
    tracker = StudyTracker(uri, "mixed")
    for seed in (0, 1):
        _record(tracker, _spec(REF, "carpet", seed), 0.9)
    old = _spec(WO, "carpet", 0, code="code-old")
    _record(tracker, old, 0.8, version="0.0.9+gold")
    _record(tracker, _spec(WO, "carpet", 1), 0.8)
    grid = _grid([REF, WO], categories=["carpet"])
    grid["cells"][2]["key"] = old.key
    tracker.declare_grid(grid)
    return uri


def test_mixed_code_versions_are_refused_naming_them(mixed_store, tmp_path, capsys):
    args = ["report", "--tracking-uri", mixed_store, "--study", "mixed", "--out", str(tmp_path)]
    assert main([*args, "--metrics", "au_pro"]) == 2
    error = capsys.readouterr().err
    assert "the runs of pagmfr to report were trained by different code" in error
    assert "0.0.9+gold (1 runs)" in error
    assert "--mix-code-versions" in error
    assert main([*args, "--metrics", "au_pro", "--mix-code-versions"]) == 0
    notes = (tmp_path / "report.md").read_text()
    assert "Code versions (mixed on request):" in notes and "0.0.9+gold (1 runs)" in notes


def test_a_study_without_a_grid_infers_its_cells(tmp_path):
    """Studies recorded before grids: cells from the runs, variants in recorded order."""
    uri = fresh_store(tmp_path)
    tracker = StudyTracker(uri, "legacy")
    for variant in (WO, REF):
        _record(tracker, _spec(variant, "carpet", 0), 0.8)
    _record(tracker, _spec(WO, "bottle", 0), 0.7)
    report = report_study(uri, "legacy", tmp_path / "out", metrics=["au_pro"], formats=["md"])
    assert report.tables[0].variants == [REF, WO]
    assert [(m.variant, m.category) for m in report.missing] == [(REF, "bottle")]
    assert "inferred from the runs" in (tmp_path / "out" / "report.md").read_text()


def _synthetic_runs(variants, categories, seeds, value):
    rows = []
    for variant in variants:
        for category in categories:
            for seed in seeds:
                rows.append(
                    {
                        "run_id": f"{variant}-{category}-{seed}",
                        "variant": variant,
                        "method": "pagmfr",
                        "category": category,
                        "kind": MVTEC_AD_CATEGORIES[category],
                        "seed": seed,
                        "status": "FINISHED",
                        "end_time": 0,
                        "error": None,
                        "au_pro": value(variant, category, seed),
                    }
                )
    return pd.DataFrame(rows)


def test_significance_marks_are_the_same_in_every_format(tmp_path):
    """Seven categories where one variant is always worse: Holm p = 2 x 1/64 < 0.05."""
    categories = list(MVTEC_AD_CATEGORIES)[:7]
    shift = {REF: 0.0, "worse": -0.05, "noise": 0.0}
    rng = np.random.default_rng(0)
    noise = {c: rng.normal(0, 0.01) for c in categories}

    def value(variant, category, seed):
        wobble = noise[category] if variant == "noise" else 0.0
        return 0.8 + 0.01 * categories.index(category) + shift[variant] + wobble + 0.001 * seed

    runs = _synthetic_runs(list(shift), categories, (0, 1), value)
    report = build_report(runs, tmp_path, "marks", metrics=["au_pro"])
    table = report.tables[0]
    assert (
        table.test("worse").p_holm == pytest.approx(2 * 2 / 2**7)
        and table.test("worse").mark == "*"
    )
    assert table.test("noise").mark == ""
    assert table.row("Mean").values["worse"].mark == "*"
    assert (
        "| **Mean** | 83.1 ± 0.1 | 78.1 ± 0.1 (−5.0)\\* |" in (tmp_path / "report.md").read_text()
    )
    assert r"$-5.0^{*}$" in (tmp_path / "components.tex").read_text()
    assert r"78.1\,{\scriptsize$\pm$0.1}$^{*}$" in (tmp_path / "au_pro.tex").read_text()
    assert "−5.0*" in (tmp_path / "report.html").read_text()
    components = pd.read_csv(tmp_path / "components.csv").set_index("variant")
    assert components.loc["worse", "mark"] == "*" and pd.isna(components.loc["noise", "mark"])

    paired = build_report(
        runs, tmp_path / "seeds", "marks", metrics=["au_pro"], test_over="category-seed"
    )
    assert paired.tables[0].test("worse").pairs == 14


@pytest.mark.integration
def test_the_report_latex_tables_compile(report, pdflatex):
    """The report's tables \\input into an article: no error, no overfull box."""
    folder = _file(report, "components.tex").parent
    log = compile_latex(pdflatex, folder, ["components.tex", "au_pro.tex", "image_auroc.tex"])
    assert "Overfull" not in log and "Float too large" not in log
    tex = (folder / "au_pro.tex").read_text()
    assert r"w/o\_MFFM 50\%" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"\textbf{92.0}\,{\scriptsize$\pm$1.4}" in tex


@pytest.mark.integration
@pytest.mark.parametrize("count", [15, 20])
def test_a_paper_sized_table_fits_the_page(tmp_path, pdflatex, count):
    """15 categories x 15 variants (the paper preset) fits one page in a smaller font; 20
    variants take one float per block of categories."""
    variants = [f"variant {i}" for i in range(count)]
    runs = _synthetic_runs(
        variants,
        list(MVTEC_AD_CATEGORIES),
        (0, 1, 2),
        lambda v, c, s: 0.9 - 0.001 * len(v + c) + s / 1000,
    )
    build_report(runs, tmp_path, "paper", metrics=["au_pro"], formats=["latex"])
    tex = (tmp_path / "au_pro.tex").read_text()
    assert tex.count(r"\begin{table}") == (1 if count == 15 else 3)
    log = compile_latex(pdflatex, tmp_path, ["components.tex", "au_pro.tex"])
    assert "Overfull" not in log and "Float too large" not in log


@pytest.mark.integration
def test_html_is_self_contained_and_renders_in_chromium(report, tmp_path, chromium):
    page = _file(report, "report.html")
    text = page.read_text()
    assert text.count("<h2 id='au_pro'>") == 1 and "<h2 id='components'>" in text
    assert "src='data:image/png;base64," in text and "http" not in text
    shown = page_text(render_dom(chromium, page.as_uri(), tmp_path / "profile", budget_ms=5000))
    assert "Components Variant AU-PRO Δ Image AUROC Δ full model 85.0 ± 1.8 –" in shown
    assert f"{OTHER} / grid / seed 0: FAILED (ValueError: broken image 005.png)" in shown


def test_report_command_writes_every_format(store, tmp_path, capsys):
    args = ["report", "--tracking-uri", store, "--study", "known", "--metrics", "au_pro"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    written = {p.name for p in tmp_path.iterdir()}
    assert {"components.tex", "components.md", "components.csv", "au_pro.tex"} <= written
    assert {"report.md", "report.html", "runs.csv", "tables.csv"} <= written
    assert "10 missing cell(s)" in capsys.readouterr().out
    # Every table's protocol line says which epoch its runs tested: here two protocols, named
    # with their counts (underscores escaped in LaTeX and Markdown alike).
    protocol = (
        "tested epoch (runs disagree): last epoch (16 runs) or best val\\_au\\_pro on "
        "validation anomalies: defects (6 runs);"
    )
    for name in ("au_pro.tex", "components.tex", "report.md", "components.md"):
        assert protocol in (tmp_path / name).read_text(), name


def test_report_reads_the_tracking_uri_from_the_environment(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # as the study scripts and MLflow read it
    assert main(["report", "--study", "known", "--metrics", "au_pro", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "components.md").is_file()


def test_bad_input_is_named(store, tmp_path, capsys):
    args = ["report", "--tracking-uri", store, "--out", str(tmp_path)]
    assert main([*args, "--study", "unknown"]) == 2
    assert (
        "no study 'unknown' in" in (err := capsys.readouterr().err)
        and "studies there: known" in err
    )
    assert main([*args, "--study", "known", "--metrics", "pixel_recall"]) == 2
    assert "no finished run has metric 'pixel_recall'; recorded: au_pro" in capsys.readouterr().err
    unreachable = ["--tracking-uri", "http://127.0.0.1:9", "--study", "known"]
    assert main(["report", *unreachable, "--out", str(tmp_path)]) == 2
    assert (
        "cannot reach the MLflow tracking server at http://127.0.0.1:9" in capsys.readouterr().err
    )
    missing = ["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--study", "x"]
    assert main(["report", *missing, "--out", str(tmp_path)]) == 2
    assert "no MLflow store at" in capsys.readouterr().err


@pytest.mark.slow
def test_report_over_stand_alone_training_folders(tmp_path, quick_train_args):
    run = tmp_path / "run"
    assert main(quick_train_args("gravel", run)) == 0
    report = report_folders([run], tmp_path / "report", metrics=["au_pro", "pixel_auroc"])
    table = report.tables[0]
    tested = "best val_au_pro on validation anomalies: defects"  # the default
    assert table.protocol.setting("tested epoch").values == {"": {tested: 1}}
    # metrics.json's config and resolution ("64px"), as the protocol line reads them
    protocol = "image size: 64 px; backbone/weights: efficientnet_lite0/imagenet; epochs: 1;"
    assert protocol in table.protocol.text
    assert "metrics at: model resolution" in table.protocol.text
    assert table.variants == ["pagmfr"] and [r.label for r in table.rows][0] == "gravel"
    metrics = pd.read_json(run / "metrics.json", typ="series")
    assert table.rows[0].values["pagmfr"].mean == pytest.approx(100 * metrics["au_pro"])


def test_mlflow_client_sees_the_declared_grid(store):
    parent = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("known").experiment_id], "tags.role = 'study'"
    )[0]
    assert parent.data.tags["grid"] == "4 variants x 4 categories x 2 seeds"


def test_non_finite_values_are_left_out_by_name_never_averaged_or_bolded(tmp_path):
    """A diverged run records NaN or infinity: the table averages the finite runs only, bolds
    nothing non-finite, and every format's protocol line counts the runs averaged and names
    those left out (an infinite mean once showed as the best, and NaN runs vanished while the
    line still counted every seed)."""
    broken = {("other", "carpet", 0): math.nan, ("other", "carpet", 1): math.nan}
    broken[("other", "grid", 0)] = math.inf

    def value(variant, category, seed):
        return broken.get((variant, category, seed), 0.9 if variant == REF else 0.8)

    runs = _synthetic_runs([REF, "other"], ["carpet", "grid", "bottle"], range(5), value)
    report = build_report(runs, tmp_path, "t", metrics=["au_pro"], formats=("md", "csv"))
    [table] = report.tables
    cells = [x for row in table.rows for x in row.values.values()]
    assert all(math.isfinite(x.mean) and (x.std is None or math.isfinite(x.std)) for x in cells)
    assert table.row("carpet").values["other"].seeds == 3
    assert table.row("grid").values["other"].seeds == 4
    assert table.row("Mean").values[REF].best and not table.row("Mean").values["other"].best
    named = (
        "runs: 27 averaged, 3 left out with a non-finite value (other / carpet / seed 0: nan; "
        "other / carpet / seed 1: nan; other / grid / seed 0: inf)"
    )
    assert named in table.protocol.text
    markdown = (tmp_path / "report.md").read_text()
    assert named in markdown.replace("\\", "")  # Markdown escapes; the text is the same
    assert "inf" not in markdown.split("Protocol:")[0].split("| Category")[1]
    tables = pd.read_csv(tmp_path / "tables.csv")
    assert np.isfinite(tables["mean"]).all() and named in tables["protocol"].iloc[0]
    assert "3 left out" in (tmp_path / "components.md").read_text()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--metrics", ",,"], "argument --metrics: ',,' names nothing"),
        (["--format", " , "], "argument --format: ' , ' names nothing"),
        (["--decimals", "-1"], "argument --decimals: '-1' is not a count of decimals"),
    ],
)
def test_report_options_are_checked_where_parsed(store, tmp_path, capsys, option, message):
    """An option that names nothing or a negative count stops at parsing with exit 2 and the
    option named (it was an IndexError, and a format error, once the report had started)."""
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as stopped:
        main(["report", "--tracking-uri", store, "--study", "known", *option, "--out", str(out)])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def _small_runs(value=0.9):
    return _synthetic_runs([REF, "other"], ["carpet", "grid", "bottle"], range(5), lambda *k: value)


def test_a_failed_report_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """The report is written beside --out and moved in at the end: a write that fails (or a
    SIGTERM) half-way leaves the previous report as it was, never the old report.md beside
    the new run's diagrams, and no partial folder."""
    out = tmp_path / "report"
    before = build_report(_small_runs(0.9), out, "t", metrics=["au_pro"])
    contents = {path.name: path.read_bytes() for path in out.iterdir()}

    def full_disk(frame, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("pagmfr.report.build.tidy.write_csv", full_disk)
    with pytest.raises(OSError, match="No space left"):
        build_report(_small_runs(0.5), out, "t", metrics=["au_pro"])
    assert {path.name: path.read_bytes() for path in out.iterdir()} == contents
    assert sorted(tmp_path.iterdir()) == [out]  # no partial folder left beside it
    assert {p.name for p in before.files} == set(contents) - {"report-files.json"}


def test_a_new_report_removes_only_the_files_of_the_previous_one(tmp_path):
    """A report into a shared folder keeps the user's own files; the previous report's files
    that the new one does not write (here its LaTeX and HTML) go, as its manifest lists them."""
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    build_report(_small_runs(), out, "t", metrics=["au_pro"])
    assert (out / "report.html").exists() and (out / "au_pro.tex").exists()
    again = build_report(_small_runs(), out, "t", metrics=["au_pro"], formats=("md",))
    names = {path.name for path in out.iterdir()}
    assert names == {p.name for p in again.files} | {"notes.txt", "report-files.json"}
    assert (out / "notes.txt").read_text() == "mine" and not (out / "report.html").exists()
    assert json.loads((out / "report-files.json").read_text())["files"] == sorted(
        p.name for p in again.files
    )


def test_a_file_that_is_not_a_store_is_named(tmp_path, capsys, monkeypatch):
    """A text file given as a sqlite store printed MLflow's SQL error as "unexpected", and a
    plain file in MLFLOW_TRACKING_URI its file store's maintenance notice: each is one line
    naming the file, exit 2, for the report and for the study's status."""
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    for command in (["report", "--out", str(tmp_path / "r")], ["study", "status"]):
        name = ["--study", "s"] if command[0] == "report" else ["s"]
        assert main([*command, *name, "--tracking-uri", f"sqlite:///{text}"]) == 2
        assert f"{text} (from sqlite:///{text}) is not an SQLite database" in (
            capsys.readouterr().err
        )
        monkeypatch.setenv("MLFLOW_TRACKING_URI", str(text))
        assert main([*command, *name]) == 2
        assert f"{text} is a file, not an MLflow store" in capsys.readouterr().err
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
