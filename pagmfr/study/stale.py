"""Which cells of a study are done: finished with this code, or (on request) with older code.

A cell's key covers the code that trains it, so a code change leaves no stale "finished" cell:
the cell is retrained, unless the user keeps the old results on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pagmfr.provenance import code_version
from pagmfr.study.cells import Cell
from pagmfr.study.tracking import StudyTracker

#: Hex digits of a code fingerprint that messages show (as the report's protocol line).
SHORT_FINGERPRINT = 8


@dataclass
class CellsDone:
    """Cell keys with a finished run, and the cells that count as done through an older run."""

    finished: set[str] = field(default_factory=set)
    #: Cells finished only with other code that are kept: cell key -> the old run's key.
    reused: dict[str, str] = field(default_factory=dict)
    #: What became of the cells finished with other code ("" when there are none).
    note: str = ""

    def pending(self, cells: list[Cell]) -> list[Cell]:
        """The cells still to train."""
        return [c for c in cells if c.key not in self.finished and c.key not in self.reused]


def cells_done(cells: list[Cell], tracker: StudyTracker, keep_old: bool) -> CellsDone:
    """The study's done cells: those whose key has a finished run and, with ``keep_old``, those
    finished with other code (found by their config key)."""
    runs = tracker.cell_runs()
    finished = {key for key, run in runs.items() if run.info.status == "FINISHED"}
    by_config = {
        run.data.tags["config_key"]: run
        for run in runs.values()
        if run.info.status == "FINISHED" and run.data.tags.get("config_key")
    }
    older = {c.key: _older_run(c, by_config) for c in cells if c.key not in finished}
    stale = [c for c in cells if older.get(c.key) is not None]
    if not stale:
        return CellsDone(finished)
    versions = sorted({older[c.key].data.tags.get("code_version", "?") for c in stale})
    recorded = {c.key: older[c.key].data.tags.get("code_fingerprint") for c in stale}
    before = _fingerprints((c.method, recorded[c.key]) for c in stale)
    old = f"{', '.join(versions)}; code {before}"
    if keep_old:
        reused = {c.key: older[c.key].data.tags["cell_key"] for c in stale}
        note = (
            f"{len(stale)} cell(s) finished with other code ({old}) are kept "
            "(--keep-old-results); the report mixes code versions only when asked"
        )
        return CellsDone(finished, reused, note)
    now = _fingerprints((c.method, c.code) for c in stale)
    note = (
        f"{len(stale)} cell(s) finished with other code ({old}) are retrained with "
        f"{code_version()} (code {now}): their code changed (--keep-old-results keeps the old "
        "results)"
    )
    return CellsDone(finished, {}, note)


def _fingerprints(pairs: Iterable[tuple[str, str | None]]) -> str:
    """``pagmfr 1a2b3c4d, rgpkd 5e6f7a8b``: each method's code fingerprints, shortened, so that
    a message about changed code names what changed even where the version is the same (a
    user's method edited without a commit)."""
    shown = {f"{method} {(code or 'not recorded')[:SHORT_FINGERPRINT]}" for method, code in pairs}
    return ", ".join(sorted(shown))


def _older_run(cell: Cell, by_config: dict[str, Any]) -> Any:
    """The cell's finished run under other code, found by its config key (or, for runs of
    versions before per-method keys, by its legacy one), or None."""
    return by_config.get(cell.config_key) or by_config.get(cell.legacy_config_key)
