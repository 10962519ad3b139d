"""Running a hyper-parameter search: Optuna proposes, ASHA stops early, every trial trains its
config on each of the search's categories and is judged on their mean validation metric."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from pagmfr.backbones import require_backbone_weights
from pagmfr.config import Config
from pagmfr.data.pipeline import checked_data_root
from pagmfr.engine import TEST_METRICS
from pagmfr.logs import log
from pagmfr.study import storage
from pagmfr.study.cells import unique
from pagmfr.study.driver_lock import driver_lock
from pagmfr.study.options import StudyInterrupted, StudyOptions
from pagmfr.study.ray_cluster import init_ray
from pagmfr.study.search_plan import SearchPlan
from pagmfr.study.tracking import StudyTracker, check_tracking_server
from pagmfr.study.trainable import METRICS
from pagmfr.study.tuning import describe_resources, make_tuner, run_tuner

#: What a trial reports each epoch to choose on: the engine's metrics, measured on the
#: validation set (``TrainingRun.validate``).
VALIDATION_METRICS = tuple(f"val_{metric}" for metric in TEST_METRICS)
SearchSpace = Callable[[Any], dict[str, Any] | None]  # Optuna define-by-run: trial -> constants


def run_hpo(
    base: Config,
    space: SearchSpace,
    categories: str | Sequence[str],
    trials: int,
    options: StudyOptions,
    seed: int = 0,
    metric: str = "val_au_pro",
    sampler: Any = None,
    grace_period: int = 1,
    reduction_factor: int = 2,
    out: str | None = None,
) -> str:
    """An Optuna search (seeded TPE unless ``sampler`` is given) over ``space``, with ASHA early
    stopping on a validation metric (never a test metric) averaged over ``categories``: each
    trial trains its config on every one of them. Writes the best trial's overrides as JSON
    (through the storage's filesystem, so ``s3://`` works), usable as an ablation study's
    base, and returns where.

    Args:
        grace_period: epochs every trial runs before ASHA may stop it.
        reduction_factor: ASHA keeps 1 in ``reduction_factor`` trials at each rung.
        out: where to write the best config (default ``<storage>/<name>/best_config.json``).
    """
    categories = unique([categories] if isinstance(categories, str) else categories, "categories")
    _check_search(base, categories, trials, metric, grace_period, reduction_factor)
    check_tracking_server(options.tracking_uri)  # in seconds, not MLflow's minutes of retries
    checked_data_root(base.data.root, categories)  # every problem, before anything is scheduled
    require_backbone_weights({"the search's base": base.backbone})
    with driver_lock(options):
        return _search(
            base,
            space,
            categories,
            trials,
            options,
            seed,
            metric,
            sampler,
            grace_period,
            reduction_factor,
            out,
        )


def _search(
    base: Config,
    space: SearchSpace,
    categories: Sequence[str],
    trials: int,
    options: StudyOptions,
    seed: int,
    metric: str,
    sampler: Any,
    grace_period: int,
    reduction_factor: int,
    out: str | None,
) -> str:
    """The search itself, under the study's driver lock (see :func:`run_hpo`)."""
    plan = SearchPlan(base, categories, seed)
    objective = f"{METRICS}/{metric}"  # the trainable's metrics, as Tune flattens them
    log(
        f"study {options.name}: {trials} trials of {len(categories)} categories each, "
        f"objective mean {metric} ({base.validation.strategy} validation anomalies)"
    )
    log(describe_resources(options))
    tracker = StudyTracker(
        options.tracking_uri, options.name, view_metrics=(f"best_{metric}", *TEST_METRICS)
    )
    init_ray()
    tuner, recorder = make_tuner(
        {},
        options,
        tracker,
        plan.spec_for,
        tune.TuneConfig(
            search_alg=OptunaSearch(
                space=space,
                metric=objective,
                mode="max",
                sampler=sampler or _seeded_tpe(seed),
            ),
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=base.train.epochs + 1,
                grace_period=grace_period,
                reduction_factor=reduction_factor,
            ),
            num_samples=trials,
            metric=objective,
            mode="max",
            reuse_actors=True,
            max_concurrent_trials=options.max_concurrent_trials,
        ),
        experiment=f"{options.name}-hpo",
        total=trials,
        plan=plan,
    )
    results = run_tuner(tuner, options.verbose)
    stopped = len(recorder.interrupted) + recorder.not_started
    if stopped:
        tracker.close_study(
            {"trials": trials, "failed": len(recorder.failed), "interrupted": stopped}
        )
        raise StudyInterrupted(
            f"study {options.name} was interrupted: {len(recorder.interrupted)} trial(s) "
            f"stopped mid-training (their runs are KILLED), {recorder.not_started} not started; "
            "no best config was written (run the search again)"
        )
    best = results.get_best_result(metric=objective, mode="max", scope="all")
    out = out or storage.join(options.storage(), options.name, "best_config.json")
    value = best.metrics_dataframe[objective].max()
    record = _export_best(options.name, plan, best.config, value, metric, out)
    tracker.close_study({"trials": trials, "failed": len(recorder.failed), "best_config": out})
    log(
        f"best mean {metric} over {', '.join(categories)}: {record['value']:.4f} with "
        f"{record['overrides']}\nbest config: {out}"
    )
    return str(out)


def _check_search(
    base: Config,
    categories: Sequence[str],
    trials: int,
    metric: str,
    grace_period: int,
    reduction_factor: int,
) -> None:
    """Refuse a search that cannot mean what it says, before anything is scheduled."""
    if trials < 1:
        raise ValueError(f"--trials {trials}: must be at least 1 (leave it out for the preset's)")
    _check_metric(base, metric)
    if not categories:
        raise ValueError("HPO needs at least one category (--categories)")
    if len(categories) == 1:
        log(
            f"warning: the HPO objective is {metric} on one category ({categories[0]}): the "
            "chosen config may suit it alone; declare several with --categories (the paper "
            "preset uses two textures and two objects)"
        )
    if grace_period < 1 or grace_period > base.train.epochs:
        raise ValueError(
            f"--grace-period {grace_period}: must be between 1 and train.epochs "
            f"({base.train.epochs})"
        )
    if reduction_factor < 2:
        raise ValueError(f"--reduction-factor {reduction_factor}: must be at least 2")


def _check_metric(base: Config, metric: str) -> None:
    """The objective must be a validation metric the trials report: anything else (a test
    metric, a typo) would fail only once a trial has trained."""
    if metric not in VALIDATION_METRICS:
        raise ValueError(
            f"--metric {metric}: HPO optimises a validation metric the trials report, one of "
            f"{', '.join(VALIDATION_METRICS)} (never a test metric)"
        )
    if base.validation.on_test:  # the trials would report test_* in place of val_*
        raise ValueError(
            f"validation.select={base.validation.select}: HPO must not choose epochs on the test "
            "split; set validation.select to a val_* metric or last"
        )


def _seeded_tpe(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _export_best(
    study: str, plan: SearchPlan, params: dict[str, Any], value: float, metric: str, out: str
) -> dict[str, Any]:
    """The best trial's overrides and full config, written to ``out`` as JSON."""
    overrides = plan.overrides(params)
    record = {
        "study": study,
        "metric": metric,
        "categories": list(plan.categories),
        "value": value,
        "overrides": overrides,
        "config": plan.config_for(overrides).to_flat(),
    }
    storage.write_text(str(out), json.dumps(record, indent=2, default=float) + "\n")
    return record


def load_best_config(location: str | Path) -> dict[str, Any]:
    """The overrides an HPO study exported (a local path or a URI), to use as an ablation
    study's base."""
    try:
        return json.loads(storage.read_text(str(location)))["overrides"]
    except FileNotFoundError as err:
        raise FileNotFoundError(f"best-config file not found: {location}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{location}: not a best_config.json written by studies/hpo.py ({err})"
        ) from err
