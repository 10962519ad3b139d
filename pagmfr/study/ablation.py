"""Running an ablation study: every variant x category x seed, each cell once."""

from __future__ import annotations

from ray import tune

from pagmfr.data.pipeline import checked_data_root
from pagmfr.engine import TEST_METRICS
from pagmfr.logs import log
from pagmfr.study.cells import Cell, StudyGrid
from pagmfr.study.driver_lock import driver_lock
from pagmfr.study.options import StudyOptions, StudySummary
from pagmfr.study.ray_cluster import init_ray
from pagmfr.study.spec import TrialSpec
from pagmfr.study.stale import cells_done
from pagmfr.study.study_report import record_study_report
from pagmfr.study.tracking import StudyTracker, check_tracking_server
from pagmfr.study.tuning import describe_resources, make_tuner, run_tuner


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
        {"cell": tune.grid_search([cell.spec().to_dict() for cell in pending])},
        options,
        tracker,
        lambda params: TrialSpec.from_dict(params["cell"]),
        tune.TuneConfig(
            max_concurrent_trials=options.max_concurrent_trials,
            reuse_actors=True,
            trial_name_creator=lambda trial: names[trial.config["cell"]["key"]].replace(" / ", "_"),
            trial_dirname_creator=lambda trial: trial.config["cell"]["key"],
        ),
        experiment=f"{options.name}-ablation",
        total=len(pending),
    )
    run_tuner(tuner, options.verbose)
    summary.trained = len(recorder.finished)
    summary.mlflow_outage = recorder.outage_report()
    summary.failed = [names[key] for key in recorder.failed]
    summary.interrupted = [names[key] for key in recorder.interrupted]
    summary.not_started = recorder.not_started
