"""`make demo`'s check that the README shows the table a fresh clone prints."""

from pathlib import Path

from pagmfr.cli import main
from pagmfr.demo import readme_drift

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_demo_rows() -> list[str]:
    """The quickstart's component table: the first table after "make demo" in the README."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Variant |"))
    return [line for line in lines[start:] if line.startswith("|")][: 2 + 3]


def test_the_readme_shows_a_demo_table_with_every_demo_variant():
    rows = _readme_demo_rows()
    assert [row.split("|")[1].strip() for row in rows[2:]] == [
        "full model",
        "PatchCore",
        "w/o normal-feature evidence",
    ]


def test_a_demo_table_that_differs_from_the_readme_is_named_row_by_row(tmp_path, capsys):
    table = tmp_path / "components.md"
    rows = _readme_demo_rows()
    table.write_text("\n".join(rows) + "\n")
    assert readme_drift(table, README) is None
    changed = rows[2].replace("|", "| 1", 2)
    table.write_text("\n".join([*rows[:2], changed, *rows[3:]]) + "\n")
    drift = readme_drift(table, README)
    assert drift is not None and changed in drift and rows[3] not in drift
    assert main(["demo", "--check-table", str(table), "--readme", str(README)]) == 0
    assert "warning: the demo's table" in capsys.readouterr().out
