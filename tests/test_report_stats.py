"""Critical-difference diagrams and the protocol line under every table, on a real MLflow store
(3 variants x 2 categories x 3 seeds with a declared grid), against numbers worked out by hand."""

import hashlib
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pandas as pd
import pytest
from conftest import compile_latex, fresh_store, page_text, render_dom
from scipy.stats import wilcoxon

from pagmfr.cli import main
from pagmfr.report import build_report, report_folders, tex_file_names
from pagmfr.report.ranks import rank_variants
from pagmfr.study.spec import TrialSpec
from pagmfr.study.tracking import StudyTracker

A, B, C = "full model", "w/o MFFM", "other"
#: AU-PRO per (category, seed) block for A, B, C. Ranks (1: best) per block:
#: 1 2 3 | 1 3 2 | 1 2 3 | 2 1 3 | 1 2 3 | 1 2 3, so rank sums 7, 12, 17 over n = 6 blocks.
BLOCKS = {
    ("carpet", 0): (0.90, 0.85, 0.80),
    ("carpet", 1): (0.91, 0.80, 0.84),
    ("carpet", 2): (0.92, 0.86, 0.81),
    ("bottle", 0): (0.85, 0.88, 0.70),
    ("bottle", 1): (0.86, 0.75, 0.72),
    ("bottle", 2): (0.87, 0.76, 0.71),
}
KINDS = {"carpet": "texture", "bottle": "object"}
#: Friedman by hand: 12 / (n k (k+1)) * sum(R_j^2) - 3 n (k+1) = (49 + 144 + 289) / 6 - 72,
#: and with k - 1 = 2 degrees of freedom the chi-square tail is exp(-x / 2).
FRIEDMAN = (49 + 144 + 289) / 6 - 72
CODE, DATA = "0123456789abcdef", {"carpet": "c" * 32, "bottle": "b" * 32}
CONFIG = {
    "method": "pagmfr",
    "data.image_size": 64,
    "backbone.name": "resnet18",
    "backbone.weights": "none",
    "train.epochs": 2,
    "validation.select": "last",
    "validation.strategy": "defects",
}
#: The data's digest: SHA-256 of the sorted "category=fingerprint" lines (as runs.csv has them).
DIGEST = hashlib.sha256(f"bottle={DATA['bottle']}\ncarpet={DATA['carpet']}\n".encode()).hexdigest()
FPR = "AU-PRO FPR limit: 0.3; "
#: How each cell's test measured, as the trainable reports it and the recorder tags it.
TESTED = {"test.resolution": "64px", "test.au_pro_fpr_limit": "0.3"}
PROTOCOL = (
    "image size: 64 px; backbone/weights: resnet18/none; epochs: 2; tested epoch: last epoch; "
    f"seeds: 0, 1, 2; {FPR}metrics at: model resolution; code: pagmfr 01234567; "
    f"data: {DIGEST[:8]} (2 categories)"
)


def _frame(blocks=BLOCKS, variants=(A, B, C), **columns) -> pd.DataFrame:
    """The blocks as finished runs, as the report reads them (one per variant and block)."""
    rows = [
        {
            "run_id": f"{variant}-{category}-{seed}",
            "variant": variant,
            "method": "pagmfr",
            "category": category,
            "kind": KINDS[category],
            "seed": seed,
            "status": "FINISHED",
            "end_time": 0,
            "error": None,
            "au_pro": value,
        }
        for (category, seed), values in blocks.items()
        for variant, value in zip(variants, values, strict=True)
    ]
    return pd.DataFrame(rows).assign(**columns)


def test_ranks_and_friedman_match_the_hand_computed_matrix():
    ranking = rank_variants(_frame(), "au_pro", [A, B, C], alpha=0.1)
    assert ranking.variants == [A, B, C] and ranking.blocks == 6
    assert ranking.average_ranks == pytest.approx({A: 7 / 6, B: 2.0, C: 17 / 6})
    assert ranking.friedman_statistic == pytest.approx(FRIEDMAN)
    assert ranking.friedman_p == pytest.approx(math.exp(-FRIEDMAN / 2))
    # Holm by hand over the three pairs: sorted p times 3, 2, 1, never below the one before.
    columns = {v: [values[i] for values in BLOCKS.values()] for i, v in enumerate((A, B, C))}
    p = {(a, b): wilcoxon(columns[a], columns[b]).pvalue for a, b in ((A, B), (A, C), (B, C))}
    assert p[(A, C)] == pytest.approx(2 / 2**6)  # A beats C in every block: exact p
    step = sorted(p.values())
    holm = [3 * step[0], max(3 * step[0], 2 * step[1]), max(3 * step[0], 2 * step[1], step[2])]
    expected = {pair: holm[step.index(value)] for pair, value in p.items()}
    assert {(t.first, t.second): t.p_holm for t in ranking.pairs} == pytest.approx(expected)
    # Only A-C (Holm p = 3/32 < 0.1) differs: two overlapping cliques; at 0.05 none does.
    assert [(t.first, t.second) for t in ranking.pairs if t.significant] == [(A, C)]
    assert ranking.cliques == [[A, B], [B, C]]
    assert rank_variants(_frame(), "au_pro", [A, B, C]).cliques == [[A, B, C]]


def test_ties_share_their_mean_rank_and_two_variants_use_wilcoxon_alone(tmp_path):
    """5 blocks, B ties A in two: A's ranks 1, 1, 1, 1.5, 1.5; no Friedman test with two."""
    blocks = {("carpet", s): (0.9, 0.8 if s < 3 else 0.9) for s in range(5)}
    runs = _frame(blocks, variants=(A, B))
    ranking = rank_variants(runs, "au_pro", [A, B])
    assert ranking.average_ranks == pytest.approx({A: 1.2, B: 1.8})
    assert math.isnan(ranking.friedman_p)
    assert ranking.pairs[0].p_value == pytest.approx(wilcoxon([0.1] * 3, [0.0] * 3).pvalue)
    build_report(runs, tmp_path, "two", metrics=["au_pro"], formats=["md"])
    text = (tmp_path / "report.md").read_text()
    assert "With 2 variants there is no Friedman test (it needs 3): the Wilcoxon" in text


def test_a_partly_run_variant_is_left_out_and_named_not_the_diagram(tmp_path):
    """A variant with a value in one block of six (a transfer, a failed study) is not ranked,
    and the others are ranked over all six blocks, as without it."""
    partial = _frame().iloc[[0]].assign(variant="D", run_id="D-carpet-0")
    runs = pd.concat([_frame(), partial], ignore_index=True)
    ranking = rank_variants(runs, "au_pro", [A, B, C, "D"], alpha=0.1)
    assert ranking.blocks == 6 and ranking.left_out == {"D": 1}
    assert ranking.average_ranks == pytest.approx({A: 7 / 6, B: 2.0, C: 17 / 6})
    build_report(runs, tmp_path, "partial", metrics=["au_pro"], formats=["md"], alpha=0.1)
    text = (tmp_path / "report.md").read_text()
    assert "Not ranked (a value in fewer than half of the blocks): D (1 of 6)." in text


def test_a_note_says_when_too_few_blocks_can_never_separate_two_variants(tmp_path):
    """With 5 blocks an exact Wilcoxon test's smallest p is 1/16 = 0.0625: above 0.05."""
    blocks = {("carpet", s): (0.9, 0.1) for s in range(5)}
    ranking = rank_variants(_frame(blocks, variants=(A, B)), "au_pro", [A, B])
    assert ranking.smallest_holm_p == pytest.approx(0.0625) and not ranking.pairs[0].significant
    build_report(_frame(blocks, variants=(A, B)), tmp_path, "few", metrics=["au_pro"])
    text = (tmp_path / "report.md").read_text()
    assert "no pair can differ at this alpha (the smallest Holm-corrected p is 0.0625)" in text


def test_too_few_blocks_get_a_note_not_a_figure(tmp_path):
    blocks = {("carpet", 0): (0.9, 0.8, 0.7), ("bottle", 0): (0.8, 0.9, 0.7)}
    report = build_report(_frame(blocks), tmp_path, "small", metrics=["au_pro"])
    note = (
        "No critical-difference diagram of au\\_pro: 3 variant(s) with values and 2 block(s) "
        "(category x seed) where every one has a value; it needs 2 variants and 5 blocks."
    )
    assert note in (tmp_path / "report.md").read_text()
    assert note.replace("\\_", "_") in (tmp_path / "report.html").read_text()
    assert (tmp_path / "au_pro-cd.tex").read_text().splitlines()[-1].startswith("% No critical")
    assert not list(tmp_path.glob("*-cd.svg")) and not list(tmp_path.glob("*-cd.pdf"))
    assert not (tmp_path / "ranks.csv").exists() and report.rankings[0].shortfall


def _spec(variant, category, seed):
    key = f"{variant}-{category}-{seed}"
    return TrialSpec(
        key=key,
        config_key=f"config-{key}",
        code=CODE,
        variant=variant,
        category=category,
        seed=seed,
        kind=KINDS[category],
        method="pagmfr",
        overrides="",
        fingerprint=DATA[category],
        config={**CONFIG, "data.category": category},
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The blocks as a study's cell runs in MLflow with its grid; ``pagmfr report --alpha``."""
    folder = tmp_path_factory.mktemp("ranked")
    uri = fresh_store(folder)
    tracker = StudyTracker(uri, "ranked")
    cells = []
    for (category, seed), values in BLOCKS.items():
        for variant, value in zip((A, B, C), values, strict=True):
            spec = _spec(variant, category, seed)
            run_id = tracker.open_cell(spec)
            metrics = {"au_pro": value, "image_auroc": value}
            tracker.log_metrics(run_id, metrics, 1, tags=TESTED)
            tracker.finish(run_id)
            cells.append(
                {"variant": variant, "category": category, "seed": seed}
                | {"key": spec.key, "config_key": spec.config_key}
            )
    tracker.declare_grid(
        {
            "variants": [{"name": v, "overrides": ""} for v in (A, B, C)],
            "categories": [{"name": c, "kind": k} for c, k in KINDS.items()],
            "seeds": [0, 1, 2],
            "cells": cells,
        }
    )
    out = folder / "report"
    args = ["report", "--tracking-uri", uri, "--study", "ranked", "--out", str(out)]
    assert main([*args, "--metrics", "au_pro,image_auroc", "--alpha", "0.1"]) == 0
    return out


def test_the_report_draws_each_metric_diagram_in_every_format(study):
    tex = (study / "au_pro-cd.tex").read_text()
    assert r"\includegraphics[width=\linewidth]{au_pro-cd}" in tex
    assert r"\label{fig:ranked-au_pro-cd}" in tex
    assert "Friedman test: chi-square 8.33, p = 0.0155." in tex and "alpha = 0.1." in tex
    assert (study / "au_pro-cd.pdf").read_bytes().startswith(b"%PDF")
    svg = ElementTree.fromstring((study / "au_pro-cd.svg").read_bytes())
    shown = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "full model (1.17)" in shown and "other (2.83)" in shown  # text kept as text
    markdown = (study / "report.md").read_text()
    assert "![Critical-difference diagram of AU-PRO](au_pro-cd.svg)" in markdown
    assert "full model 1.17, w/o MFFM 2.00, other 2.83" in markdown
    assert (study / "report.html").read_text().count("src='data:image/svg+xml;base64,") == 2
    ranks = pd.read_csv(study / "ranks.csv").set_index(["metric", "variant"])
    assert ranks.loc[("au_pro", B), "average_rank"] == pytest.approx(2.0)
    tests = pd.read_csv(study / "rank_tests.csv")
    assert tests.loc[tests["significant"], ["first", "second"]].values.tolist() == [[A, C]] * 2


def test_every_table_in_every_format_carries_the_protocol_line(study):
    """AU-PRO's FPR limit only under the tables that show AU-PRO (the line holds no character
    LaTeX or Markdown escapes)."""
    without_fpr = PROTOCOL.replace(FPR, "")
    lines = {"au_pro.tex": PROTOCOL, "image_auroc.tex": without_fpr}
    lines |= {"components.tex": PROTOCOL, "au_pro-cd.tex": PROTOCOL}
    for name, line in lines.items():
        assert f"Protocol: {line}." in (study / name).read_text(), name
    report = (study / "report.md").read_text()
    assert report.count(f"Protocol: {PROTOCOL}.") == 1  # the AU-PRO table
    assert report.count(f"Protocol: {without_fpr}.") == 1  # the image AUROC table
    assert f"Protocol: {PROTOCOL}." in (study / "components.md").read_text()
    page = (study / "report.html").read_text()
    assert page.count("<p class='note protocol'>Protocol: ") == 3  # components, two metrics
    for name in ("tables.csv", "components.csv", "ranks.csv", "rank_tests.csv"):
        frame = pd.read_csv(study / name)
        rows = frame[frame["metric"] == "au_pro"] if name != "components.csv" else frame
        assert set(rows["protocol"]) == {PROTOCOL}, name


@pytest.mark.integration
def test_the_diagram_compiles_and_the_page_renders(study, tmp_path, pdflatex, chromium):
    log = compile_latex(pdflatex, study, ["components.tex", "au_pro.tex", "au_pro-cd.tex"])
    assert "<au_pro-cd.pdf" in log and "Overfull" not in log
    page = study / "report.html"
    shown = page_text(render_dom(chromium, page.as_uri(), tmp_path / "profile", budget_ms=5000))
    assert f"Protocol: {PROTOCOL}." in shown
    assert "Critical-difference diagram of AU-PRO: average rank over 6 blocks" in shown


def test_runs_that_disagree_are_named_in_every_format(tmp_path):
    """Two epochs values; carpet's seed 0 read other data (each category listed then)."""
    blocks = [(category, seed) for (category, seed) in BLOCKS for _ in range(3)]
    epochs = [str(2 if seed == 0 else 600) for _, seed in blocks]
    data = ["x" * 32 if block == ("carpet", 0) else DATA[block[0]] for block in blocks]
    runs = _frame(**{"params.train.epochs": epochs, "tags.data_fingerprint": data})
    build_report(runs, tmp_path, "mixed", metrics=["au_pro"])
    epochs_line = "epochs (runs disagree): 600 (12 runs) or 2 (6 runs);"
    data_line = (
        "data (runs disagree): carpet cccccccc (6 runs) or xxxxxxxx (3 runs), bottle bbbbbbbb."
    )
    for name in ("au_pro.tex", "components.tex", "report.md", "components.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert epochs_line in text and data_line in text, name
    assert all(epochs_line in text for text in pd.read_csv(tmp_path / "tables.csv")["protocol"])


def test_stand_alone_runs_give_their_metrics_json_protocol(tmp_path):
    folders = []
    for seed, resolution in enumerate(("full", "64px")):
        folder = tmp_path / f"run{seed}"
        folder.mkdir()
        record = {
            "config": {**CONFIG, "data.category": "carpet", "data.kind": "texture"},
            "seed": seed,
            "au_pro": 0.8,
            "resolution": resolution,
            "code_version": "0.1.0+gabc",
            "data_fingerprint": "d" * 16,
        }
        (folder / "metrics.json").write_text(json.dumps(record))
        folders.append(folder)
    report = report_folders(folders, tmp_path / "report", metrics=["au_pro"], formats=["md"])
    text = report.tables[0].protocol.text
    assert "metrics at (runs disagree): full resolution (1 run) or model resolution (1 run)" in text
    assert "code: pagmfr 0.1.0+gabc; data: " in text


def test_a_metric_named_like_another_metric_diagram_is_refused():
    with pytest.raises(ValueError, match="as the critical-difference diagram of 'au_pro' is"):
        tex_file_names(["au_pro", "au_pro-cd"])


@pytest.mark.parametrize("alpha", ["0", "1", "-0.5", "nan"])
def test_alpha_outside_zero_one_is_refused(alpha, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["report", "--study", "any", "--out", "x", "--alpha", alpha])
    assert stopped.value.code == 2
    assert "alpha must be between 0 and 1 (exclusive)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        build_report(_frame(), "unused", "x", metrics=["au_pro"], alpha=float(alpha))


def test_the_report_package_imports_no_matplotlib():
    code = "import sys, pagmfr.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
