"""The Tuner of a study: trials with their resources, MLflow records, progress, and Tune's own
output kept quiet unless asked for."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import ray
from ray import tune

from pagmfr.logs import environment
from pagmfr.registry import MethodSpec, user_methods
from pagmfr.study.options import StudyOptions
from pagmfr.study.progress import StudyProgress
from pagmfr.study.ray_cluster import check_gpu_requests
from pagmfr.study.recorder import MLflowRecorder
from pagmfr.study.search_plan import SearchPlan
from pagmfr.study.spec import TrialSpec
from pagmfr.study.tracking import StudyTracker
from pagmfr.study.trainable import TrialContext, run_cell

#: A trial's spec from its params (Tune's ``trial.config``).
SpecOf = Callable[[dict[str, Any]], TrialSpec]


def shippable_methods(methods: list[MethodSpec]) -> list[MethodSpec]:
    """User-registered methods, pickled by value when their module cannot be imported on a
    worker (a study script run as ``__main__``, a test file): workers have only pagmfr."""
    from ray import cloudpickle  # Ray's own copy: the one that serialises what trials receive

    for spec in methods:
        module = sys.modules.get(getattr(spec.origin, "__module__", ""))
        if module is not None and module.__name__ != "__main__":
            cloudpickle.register_pickle_by_value(module)
    return methods


def make_tuner(
    param_space: dict[str, Any],
    options: StudyOptions,
    tracker: StudyTracker,
    spec_of: SpecOf,
    tune_config: tune.TuneConfig,
    experiment: str,
    total: int,
    plan: SearchPlan | None = None,
) -> tuple[tune.Tuner, MLflowRecorder]:
    """The Tuner of a study's ``total`` trials, recording to MLflow and printing progress."""
    check_gpu_requests(options.gpus_per_trial, ray.cluster_resources().get("GPU", 0))
    recorder = MLflowRecorder(tracker, spec_of, total)
    context = TrialContext(
        study=options.name,
        cells_path=options.cells(),
        checkpoint_every=options.checkpoint_every,
        keep_checkpoint=options.keep_checkpoint,
        plan=plan,
        methods=shippable_methods(user_methods()),
    )
    gpus = options.gpus()

    def resources(params: dict[str, Any]) -> tune.PlacementGroupFactory:
        """Per trial, by the cell's method: GPU shares differ between methods."""
        method = spec_of(params).method
        return tune.PlacementGroupFactory([{"CPU": options.cpus_per_trial, "GPU": gpus.of(method)}])

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_cell, context=context), resources),
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=options.storage(),
            callbacks=[recorder, StudyProgress(total, spec_of)],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # Tune forces an experiment snapshot whenever a trial has checkpointed
            # num_to_keep times since the last one: with 2 and checkpoints a minute apart
            # (trainable.CHECKPOINT_SECONDS), its periodic snapshots come first.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=options.verbose,
        ),
    )
    return tuner, recorder


def run_tuner(tuner: tune.Tuner, verbose: int) -> tune.ResultGrid:
    """``tuner.fit()``, ended by SIGTERM as by SIGINT (Tune stops its trials, saves its state
    and returns; the recorder marks the stopped cells), and printing Tune's own output only at
    ``verbose`` 1 or more: its new output engine prints an experiment banner even at verbosity
    0, the legacy reporter prints nothing at 0 (the study's own progress lines stand in for
    both)."""
    main = threading.current_thread() is threading.main_thread()  # signals reach it only
    previous = signal.signal(signal.SIGTERM, _as_interrupt) if main else None
    try:
        if verbose:
            return tuner.fit()
        with environment(RAY_AIR_NEW_OUTPUT="0"):
            return tuner.fit()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler, ``kill``) handled as Ctrl-C: Tune ends the run it catches."""
    signal.raise_signal(signal.SIGINT)


def describe_resources(options: StudyOptions) -> str:
    """What each trial gets and where the study records, as the study's start says it."""
    return (
        f"  each trial: {options.cpus_per_trial:g} CPU, {options.gpus().describe()} GPU; "
        f"MLflow: {options.tracking_uri}; storage: {options.storage()}"
    )
