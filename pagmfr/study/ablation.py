"""Running an ablation study: every variant x category x seed, each cell once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from pagmfr.data.pipeline import checked_data_root
from pagmfr.engine import TEST_METRICS
from pagmfr.logs import environment, log
from pagmfr.study.cells import Cell, StudyGrid
from pagmfr.study.driver_lock import driver_lock
from pagmfr.study.options import StudyOptions, StudySummary
from pagmfr.study.ray_cluster import init_ray
from pagmfr.study.spec import TrialSpec
from pagmfr.study.stale import cells_done
from pagmfr.study.study_report import record_study_report
from pagmfr.study.tracking import StudyTracker, check_tracking_server
from pagmfr.study.tuning import describe_resources, make_tuner, run_tuner


class CellQueue(Searcher):
    """The pending cells as Tune's trials, one per suggestion, in order. Not a
    ``tune.grid_search`` over them: Tune copies a grid's whole list of values for every trial
    it makes, so the driver's start would grow with the square of the number of cells (a
    minute at 1,000 cells, hours at 10,000)."""

    def __init__(self, cells: list[dict[str, Any]]):
        super().__init__()
        self.cells = cells
        self.given = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        """The next cell's params, or ``FINISHED`` once every cell has its trial."""
        if self.given == len(self.cells):
            return Searcher.FINISHED
        self.given += 1
        return {"cell": self.cells[self.given - 1]}

    def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
        """Nothing to learn: every cell runs once, whatever the others scored."""

    def save(self, checkpoint_path: str) -> None:
        """Tune saves its searcher with every snapshot of the experiment: how many cells were
        given is all that changes."""
        Path(checkpoint_path).write_text(str(self.given))


def ready_trials() -> str:
    """How many trials Tune keeps waiting for resources (each with its placement group, the
    demand an autoscaler sees): Tune's rule for its own grid search, which it applies to a
    searcher only when told (``TUNE_MAX_PENDING_TRIALS_PG``; a searcher otherwise gets one,
    and the trials start one at a time). A value the user set is kept."""
    chosen = os.environ.get("TUNE_MAX_PENDING_TRIALS_PG", "auto")
    if chosen != "auto":
        return chosen
    return str(max(200, int(1.1 * ray.cluster_resources().get("CPU", 1.0))))


def run_ablation(grid: StudyGrid, options: StudyOptions) -> StudySummary:
    """Run every cell of ``grid`` on Ray Tune, each once, recorded in MLflow.

    Cells already finished in MLflow are skipped, unfinished ones resume from their last
    checkpoint, failed ones are retried in the same run, and cells finished with other code
    are retrained (unless ``options.keep_old_results``). The grid is declared on the study
    run; at the end the study run gets the report and the aggregate metrics per variant.

    Returns:
        A :class:`StudySummary`: cells, already finished, trained now, failed.
    """
    check_tracking_server(options.tracking_uri)  # in seconds, not MLflow's minutes of retries
    checked_data_root(grid.base.data.root, grid.categories)  # every problem, up front
    cells = grid.cells()
    with driver_lock(options):
        return _run_cells(grid, cells, options)


def _run_cells(grid: StudyGrid, cells: list[Cell], options: StudyOptions) -> StudySummary:
    """The study's run under its driver lock: a second driver waits, then finds every cell
    the first one finished."""
    tracker = StudyTracker(options.tracking_uri, options.name, view_metrics=TEST_METRICS)
    done = cells_done(cells, tracker, options.keep_old_results)
    pending = done.pending(cells)
    summary = StudySummary(
        options.name,
        len(cells),
        len(cells) - len(pending),
        0,
        tracking_uri=options.tracking_uri,
        code_changes=done.note,
        ui_link=tracker.ui_link(),
    )
    log(
        f"study {options.name}: {len(cells)} cells, {summary.already_finished} already "
        f"finished, {len(pending)} to run" + (f"; {done.note}" if done.note else "")
    )
    log(describe_resources(options))
    step = tracker.declare_grid(grid.declaration(options.name, cells, done.reused))
    if pending:
        _train(pending, options, tracker, summary)
    if summary.was_interrupted:  # no report of a half-run study; a second Ctrl-C may follow
        summary.report_note = "no report: the study was interrupted"
    else:
        summary.report_note = record_study_report(tracker, step)
    tracker.close_study(
        {
            "cells": len(cells),
            "failed": len(summary.failed),
            "interrupted": len(summary.interrupted) + summary.not_started,
        }
    )
    return summary


def _train(
    pending: list[Cell], options: StudyOptions, tracker: StudyTracker, summary: StudySummary
) -> None:
    """The pending cells as one Tune grid of trials; what became of them goes in ``summary``."""
    init_ray()
    names = {cell.key: cell.name for cell in pending}
    tuner, recorder = make_tuner(
        {},
        options,
        tracker,
        lambda params: TrialSpec.from_dict(params["cell"]),
        tune.TuneConfig(
            search_alg=CellQueue([cell.spec().to_dict() for cell in pending]),
            num_samples=len(pending),
            max_concurrent_trials=options.max_concurrent_trials,
            reuse_actors=True,
            trial_name_creator=lambda trial: names[trial.config["cell"]["key"]].replace(" / ", "_"),
            trial_dirname_creator=lambda trial: trial.config["cell"]["key"],
        ),
        experiment=f"{options.name}-ablation",
        total=len(pending),
    )
    with environment(TUNE_MAX_PENDING_TRIALS_PG=ready_trials()):
        run_tuner(tuner, options.verbose)
    summary.trained = len(recorder.finished)
    summary.mlflow_outage = recorder.outage_report()
    summary.failed = [names[key] for key in recorder.failed]
    summary.interrupted = [names[key] for key in recorder.interrupted]
    summary.not_started = recorder.not_started
