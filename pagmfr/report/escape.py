"""User text made safe for each output: variant, category, metric and study names, and errors,
come from study scripts, MLflow tags or the command line, and must never act as markup, split
a table row, run as a spreadsheet formula or break out of an HTML attribute."""

from __future__ import annotations

import html as _html
import re
from typing import Any

import pandas as pd

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
#: Markdown characters that could start markup: emphasis, code, links, raw HTML, entities,
#: headings, strikethrough, maths (GitHub's ``$...$``), and the table cell separator.
#: CommonMark lets a backslash escape any ASCII punctuation.
_MARKDOWN_SPECIAL = set("\\`*_[]<>|~&#$")
#: What a spreadsheet reads as a formula at the start of a cell (OWASP, CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: C0 and C1 control characters but tab, line feed and carriage return (XML 1.0 forbids the
#: C0 ones; C1 and DEL are discouraged).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def latex(text: Any) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in visible(_one_line(text)))


def markdown(text: Any) -> str:
    """``text`` as literal Markdown: no HTML, emphasis, links or extra table cells."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in visible(_one_line(text)))


def html(text: Any) -> str:
    """``text`` as HTML text or a quoted attribute value (both quote kinds escaped)."""
    return _html.escape(visible(text), quote=True)


def identifier(text: Any) -> str:
    """``text`` as an HTML id or a LaTeX label: letters, digits, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"


def plot_label(text: Any) -> str:
    """``text`` for a matplotlib label, where ``$...$`` would be typeset as maths (and an
    unpaired ``$`` is an error)."""
    return visible(text).replace("$", r"\$")


def visible(text: Any) -> str:
    """``text`` with its control characters (ESC, NUL, BEL...; line breaks and tabs kept)
    written out as ``\\x1b``: XML, and so SVG and HTML, cannot hold them at all, and elsewhere
    they act on a terminal or vanish from sight."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _one_line(text: Any) -> str:
    return re.sub(r"[\r\n]+", " ", str(text))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``@SUM(...)``,
    ``-2+3``) gets a leading ``'``, per OWASP's CSV-injection advice, so it shows as text.
    Numbers stay numbers: a number, or text that is one (``-1.5``, an MLflow param), is left
    as it is, since a spreadsheet reads it as the same number and runs nothing. Control
    characters are written out (:func:`visible`)."""
    if not isinstance(value, str):
        return value
    value = visible(value)
    return "'" + value if value.startswith(_FORMULA_START) and not _is_number(value) else value


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell, and every column name, passed through :func:`csv_cell`."""
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):
            safe[column] = safe[column].map(csv_cell)
    return safe.rename(columns=csv_cell)
