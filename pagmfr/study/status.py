"""How far a study got, read from its MLflow records: ``pagmfr study status NAME``.

A study on a cluster runs for days, and Tune's console dies with the terminal that started
it. MLflow outlives both: the study run holds the grid the study last declared, and every cell
has a run found by its ``cell_key`` tag, whose status the driver keeps (RUNNING when a trial
starts, FINISHED or FAILED with its ``error`` tag when it ends, KILLED when an interrupt stopped
it). So the status works from
any machine that reaches the store: the head's ``mlflow server`` from a laptop, or a sqlite
file.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from pagmfr.records import declared_grid, latest_cell_runs, study_experiment, study_run
from pagmfr.study.spec import cell_name
from pagmfr.study.text import HEADLINE, duration, last_line

#: The states a declared cell can be in, in the order the summary counts them.
STATES = ("finished", "running", "failed", "interrupted", "missing")


@dataclass(frozen=True)
class CellStatus:
    """One declared cell: its state, its time so far (seconds), its test metrics when
    finished and the last line of its error when failed."""

    variant: str
    category: str
    seed: int
    state: str
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def name(self) -> str:
        return cell_name(self.variant, self.category, self.seed)


@dataclass(frozen=True)
class StudyStatus:
    """Every declared cell of a study, and whether the study's driver is still running."""

    study: str
    tracking_uri: str
    cells: list[CellStatus]
    study_running: bool

    def count(self, state: str) -> int:
        return sum(cell.state == state for cell in self.cells)

    def eta_seconds(self) -> float | None:
        """Time left: the mean finished cell's time, times the cells still to run, over the
        cells running at once; None when nothing runs or no cell has finished yet."""
        times = [c.seconds for c in self.cells if c.state == "finished"]
        running = self.count("running")
        if not self.study_running or not running or not times:
            return None
        left = sum(c.state in ("running", "missing") for c in self.cells)
        return sum(times) / len(times) * left / running

    def render(self) -> str:
        """The summary line, a variant x category table of finished cells per seed count,
        then each failed, interrupted and running cell on its own line."""
        shown = [s for s in STATES if self.count(s) or s in ("finished", "running", "failed")]
        counts = ", ".join(f"{self.count(s)} {s}" for s in shown)
        spent = duration(sum(c.seconds for c in self.cells))
        eta = self.eta_seconds()
        lines = [
            f"study {self.study} ({self.tracking_uri}): {len(self.cells)} cells: {counts}; "
            f"{spent} of cell time" + (f"; ETA {duration(eta)}" if eta is not None else ""),
            "" if self.study_running else "the study is not running now",
        ]
        lines += _grid_table(self.cells)
        for state in ("failed", "interrupted", "running"):
            for cell in (c for c in self.cells if c.state == state):
                detail = cell.error if state == "failed" else f"{duration(cell.seconds)} so far"
                if state == "interrupted":
                    detail = "its trial stopped when the study did; the next run resumes it"
                lines.append(f"{state.upper():<12} {cell.name}: {detail}")
        return "\n".join(line for line in lines if line) + "\n"


def _grid_table(cells: list[CellStatus]) -> list[str]:
    """Per variant and category: finished / declared, with failures marked ``!``."""
    variants = list(dict.fromkeys(c.variant for c in cells))
    categories = list(dict.fromkeys(c.category for c in cells))
    done: Counter = Counter()
    declared: Counter = Counter()
    failed: Counter = Counter()
    for cell in cells:
        declared[cell.variant, cell.category] += 1
        done[cell.variant, cell.category] += cell.state == "finished"
        failed[cell.variant, cell.category] += cell.state == "failed"
    width = max(len(v) for v in variants) + 2
    column = max(8, *(len(c) + 2 for c in categories))
    rows = ["finished cells per variant and category (! a failure):"]
    rows.append(" " * width + "".join(f"{c:>{column}}" for c in categories))
    for variant in variants:
        row = ""
        for category in categories:
            key = variant, category
            mark = "!" if failed[key] else ""
            row += f"{mark}{done[key]}/{declared[key]}".rjust(column)
        rows.append(f"{variant:<{width}}{row}")
    return rows


def study_status(tracking_uri: str, study: str) -> StudyStatus:
    """The state of every cell the study last declared, from its MLflow records."""
    client, experiment = study_experiment(tracking_uri, study)
    parent = study_run(client, experiment.experiment_id)
    grid = declared_grid(client, parent)
    if grid is None:
        raise ValueError(
            f"study {study!r} in {tracking_uri} has no declared grid (recorded by an older "
            "version): run the study again, or use `pagmfr report --study` on its runs"
        )
    study_running = parent.info.status == "RUNNING"
    latest = latest_cell_runs(client, experiment.experiment_id)
    cells = [_cell_status(cell, latest.get(cell["key"]), study_running) for cell in grid["cells"]]
    return StudyStatus(study, tracking_uri, cells, study_running)


def _cell_status(cell: dict, run, study_running: bool) -> CellStatus:
    """A declared cell's state from its latest run (None: never started)."""
    identity = {"variant": cell["variant"], "category": cell["category"], "seed": cell["seed"]}
    if run is None:
        return CellStatus(**identity, state="missing")
    info = run.info
    end = info.end_time or time.time() * 1000
    seconds = max(0.0, (end - info.start_time) / 1000) if info.start_time else 0.0
    if info.status == "FINISHED":
        metrics = {k: v for k, v in run.data.metrics.items() if k in HEADLINE}
        return CellStatus(**identity, state="finished", seconds=seconds, metrics=metrics)
    if info.status == "FAILED":
        tags = run.data.tags
        error = last_line(tags["error"]) if "error" in tags else "no error recorded"
        return CellStatus(**identity, state="failed", seconds=seconds, error=error)
    state = "running" if study_running and info.status == "RUNNING" else "interrupted"
    return CellStatus(**identity, state=state, seconds=seconds)
