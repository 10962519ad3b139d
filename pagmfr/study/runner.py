"""Running studies: an ablation grid or an Optuna search, on a local Ray or a cluster."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from pagmfr.config import Config
from pagmfr.data.pipeline import checked_data_root
from pagmfr.engine import TEST_METRICS
from pagmfr.files import require_plain_name
from pagmfr.logs import environment, log
from pagmfr.models.registry import MethodSpec, user_methods
from pagmfr.provenance import code_version
from pagmfr.study import storage
from pagmfr.study.cells import Cell, SearchPlan, ablation_cells, describe_overrides
from pagmfr.study.presets import GpusPerTrial
from pagmfr.study.progress import StudyProgress
from pagmfr.study.recorder import MLflowRecorder
from pagmfr.study.tracking import StudyTracker
from pagmfr.study.trainable import METRICS, TrialContext, run_cell


@dataclass
class StudyOptions:
    """Where and how a study runs; every field has a sensible local default."""

    name: str
    tracking_uri: str = "sqlite:///mlflow.db"
    storage_path: str = "runs"
    cpus_per_trial: float = 1.0
    #: GPUs per trial, by method (a number: every method's). None: not chosen, so none; a study
    #: then refuses to start on a cluster with GPUs rather than train there on CPUs.
    gpus_per_trial: GpusPerTrial | float | None = None
    #: Retries of a failing trial within one run of the study (Tune's FailureConfig).
    max_failures: int = 1
    max_concurrent_trials: int | None = None
    checkpoint_every: int = 1
    #: Also store each cell's best checkpoint as an MLflow artifact.
    keep_checkpoint: bool = False
    #: Where cells train (``<cells>/<study>/cells/<key>``). A restarted driver's cells resume
    #: from here, so on a cluster make it a shared filesystem (EFS, NFS). Default: the storage
    #: path when it is a local folder, else ``~/pagmfr-cells`` on each node (then only Tune's
    #: checkpoints bring a trial back, after a node failure).
    cells_path: str | None = None
    #: Count cells finished with older code as done; by default they are retrained.
    keep_old_results: bool = False
    #: Ray Tune's own console output: 0 none (the study prints a line per cell and a progress
    #: bar), 1 its status tables, 2 its trial results too.
    verbose: int = 0

    def __post_init__(self) -> None:
        require_plain_name(self.name, "study name")  # it names folders under the storage path
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, not {self.checkpoint_every}")
        if isinstance(self.gpus_per_trial, (int, float)):
            self.gpus_per_trial = GpusPerTrial(float(self.gpus_per_trial))

    def gpus(self) -> GpusPerTrial:
        """The GPUs each trial requests (none when not chosen)."""
        return self.gpus_per_trial or GpusPerTrial()

    def cells(self) -> str:
        """The absolute cells folder (see ``cells_path``)."""
        if self.cells_path:
            return str(Path(self.cells_path).expanduser().resolve())
        return (
            str(Path("~/pagmfr-cells").expanduser())
            if "://" in self.storage_path
            else self.storage()
        )

    def storage(self) -> str:
        """Tune wants an absolute path or a URI (s3://...)."""
        return (
            self.storage_path
            if "://" in self.storage_path
            else str(Path(self.storage_path).resolve())
        )


@dataclass
class StudySummary:
    """What a run of a study did: cells, skipped, trained, failed, MLflow outages."""

    name: str
    cells: int
    already_finished: int
    trained: int
    failed: list[str] = field(default_factory=list)
    tracking_uri: str = ""
    mlflow_outage: str = ""
    #: What became of cells finished with older code (retrained, or kept on request).
    code_changes: str = ""
    #: The MLflow UI's view of the study's cells.
    ui_link: str = ""
    #: Why the study run holds no report, if it does not.
    report_note: str = ""

    def describe(self) -> str:
        """The summary the study scripts print at the end."""
        lines = [
            f"study {self.name}: {self.cells} cells, {self.already_finished} already finished, "
            f"{self.trained} trained now, {len(self.failed)} failed",
        ]
        lines += [
            f"  {note}"
            for note in (self.code_changes, self.mlflow_outage, self.report_note)
            if note
        ]
        lines += [
            f"  failed: {name} (error recorded in MLflow; re-run the study to retry)"
            for name in self.failed
        ]
        if self.tracking_uri.startswith(("http://", "https://")):
            lines.append(f"MLflow records: {self.ui_link}")
        else:
            lines.append(
                f"MLflow records: mlflow ui --backend-store-uri {self.tracking_uri}, then open "
                f"{self.ui_link}"
            )
        return "\n".join(lines)


#: Where a local Ray binds: loopback, so nothing outside this machine reaches it, and not
#: 127.0.0.1, which Ray replaces with the machine's network address.
LOCAL_NODE_IP = "127.0.0.2"


def cluster_address() -> str | None:
    """The cluster this process belongs to: ``RAY_ADDRESS`` (``local``: none), else the one
    ``ray start`` started on this node (as under ``ray submit``) while a raylet here serves it.
    A record left by a stopped cluster is ignored."""
    address = os.environ.get("RAY_ADDRESS", "")
    if address:
        return None if address == "local" else address
    from ray._private.services import find_bootstrap_address, find_gcs_addresses

    recorded = find_bootstrap_address(None)  # Ray's own record, in this node's Ray temp folder
    return recorded if recorded and recorded in find_gcs_addresses() else None


def start_local_ray(num_cpus: int | None = None) -> None:
    """A Ray of this machine only, on a loopback address (:data:`LOCAL_NODE_IP`)."""
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address=LOCAL_NODE_IP,
    )


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster this process belongs to (:func:`cluster_address`); otherwise start a
    local Ray (:func:`start_local_ray`)."""
    if ray.is_initialized():
        return
    address = cluster_address()
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        start_local_ray(num_cpus)


def check_gpu_requests(gpus: GpusPerTrial | None, cluster_gpus: float) -> None:
    """Refuse what would silently go wrong: trials on CPUs on a cluster with GPUs (Ray hides the
    GPUs from a trial that requests none) unless asked for, and trials waiting forever for GPUs
    on a local Ray that has none; say loudly when a cluster's trials wait for GPU nodes."""
    if gpus is None and cluster_gpus:
        raise ValueError(
            f"the cluster has {cluster_gpus:g} GPUs but the trials request none, so they would "
            "train on CPUs: pass --gpus-per-trial (e.g. 0.5, or rgpkd=0.5 for one method), or "
            "--gpus-per-trial 0 to train on CPUs on purpose"
        )
    requested = gpus or GpusPerTrial()
    if requested.any() and not cluster_gpus:
        if cluster_address() is None:
            raise ValueError(
                f"the trials request GPUs ({requested.describe()} each) but this machine has "
                "none: pass --gpus-per-trial 0 to train on CPUs"
            )
        log(
            f"WARNING: the trials request GPUs ({requested.describe()} each) but the cluster has "
            "none yet: they wait for the autoscaler to add GPU nodes"
        )
    elif cluster_gpus and not requested.any():
        log(f"WARNING: training on CPUs although the cluster has {cluster_gpus:g} GPUs")


def shippable_methods(methods: list[MethodSpec]) -> list[MethodSpec]:
    """User-registered methods, pickled by value when their module cannot be imported on a
    worker (a study script run as ``__main__``, a test file): workers have only pagmfr."""
    from ray import cloudpickle  # Ray's own copy: the one that serialises what trials receive

    for spec in methods:
        module = sys.modules.get(getattr(spec.factory, "__module__", ""))
        if module is not None and module.__name__ != "__main__":
            cloudpickle.register_pickle_by_value(module)
    return methods


def _tuner(
    param_space,
    options: StudyOptions,
    tracker: StudyTracker,
    spec_of,
    tune_config,
    experiment: str,
    total: int,
    plan: SearchPlan | None = None,
) -> tuple[tune.Tuner, MLflowRecorder]:
    """The Tuner of a study's ``total`` trials, recording to MLflow and printing progress."""
    check_gpu_requests(options.gpus_per_trial, ray.cluster_resources().get("GPU", 0))
    recorder = MLflowRecorder(tracker, spec_of)
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
        method = spec_of(params)["method"]
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


def _fit(tuner: tune.Tuner, verbose: int) -> tune.ResultGrid:
    """``tuner.fit()``, printing Tune's own output only at ``verbose`` 1 or more: its new
    output engine prints an experiment banner even at verbosity 0, the legacy reporter prints
    nothing at 0 (the study's own progress lines stand in for both)."""
    if verbose:
        return tuner.fit()
    with environment(RAY_AIR_NEW_OUTPUT="0"):
        return tuner.fit()


def _where(options: StudyOptions) -> str:
    """What each trial gets and where the study records, as the study's start says it."""
    return (
        f"  each trial: {options.cpus_per_trial:g} CPU, {options.gpus().describe()} GPU; "
        f"MLflow: {options.tracking_uri}; storage: {options.storage()}"
    )


def _stale_cells(
    cells: list[Cell], tracker: StudyTracker, keep_old: bool
) -> tuple[set[str], dict[str, str], str]:
    """The cells already finished (their key has a finished run), the cells finished only with
    older code that count as done (``keep_old``: cell key -> the old run's key), and a line on
    what became of those."""
    runs = tracker.cell_runs()
    finished = {key for key, run in runs.items() if run.info.status == "FINISHED"}
    by_config = {
        run.data.tags["config_key"]: run
        for run in runs.values()
        if run.info.status == "FINISHED" and run.data.tags.get("config_key")
    }
    stale = [c for c in cells if c.key not in finished and c.config_key in by_config]
    if not stale:
        return finished, {}, ""
    versions = sorted({by_config[c.config_key].data.tags.get("code_version", "?") for c in stale})
    if keep_old:
        reused = {c.key: by_config[c.config_key].data.tags["cell_key"] for c in stale}
        line = (
            f"{len(stale)} cell(s) finished with other code ({', '.join(versions)}) are kept "
            "(--keep-old-results); the report mixes code versions only when asked"
        )
        return finished, reused, line
    line = (
        f"{len(stale)} cell(s) finished with other code ({', '.join(versions)}) are retrained "
        f"with {code_version()}: their code changed (--keep-old-results keeps the old results)"
    )
    return finished, {}, line


def _grid(
    name: str,
    variants: Mapping[str, Mapping[str, Any]],
    cells: list[Cell],
    seeds: list[int],
    reused: dict[str, str],
) -> dict[str, Any]:
    """The grid this run of the study declares: every cell that should exist, in order."""
    return {
        "study": name,
        "declared_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "variants": [{"name": v, "overrides": describe_overrides(o)} for v, o in variants.items()],
        "categories": [
            {"name": c, "kind": k} for c, k in dict.fromkeys((c.category, c.kind) for c in cells)
        ],
        "seeds": seeds,
        "cells": [
            {
                "variant": c.variant,
                "category": c.category,
                "seed": c.seed,
                "key": reused.get(c.key, c.key),
                "config_key": c.config_key,
            }
            for c in cells
        ],
    }


def _metric_name(text: str) -> str:
    """``text`` as a part of an MLflow metric name (letters, digits, ``_ - . space``)."""
    return re.sub(r"[^\w\-. ]", "_", text).strip(". ") or "_"


def record_study_report(tracker: StudyTracker, step: int) -> str:
    """The study's report (HTML, Markdown, LaTeX, CSV) as the study run's ``report/``
    artifacts, and its component table as the study run's metrics at ``step``
    (``au_pro/full model``: mean over categories, ``au_pro_std/full model``: std over seeds,
    as fractions). Returns why there is none, or ""."""
    from pagmfr.report import report_study

    with tempfile.TemporaryDirectory() as folder:
        try:
            report = report_study(
                tracker.tracking_uri, tracker.study, folder, metrics=list(TEST_METRICS)
            )
        except (ValueError, OSError) as err:
            return f"no report on the study run: {str(err).splitlines()[0]}"
        tracker.log_artifacts(tracker.parent_id, folder, "report")
    table = report.components
    aggregates = {}
    for (variant, metric), cell in table.cells.items():
        if cell.value is None:
            continue
        aggregates[f"{metric}/{_metric_name(variant)}"] = cell.value.mean / table.scale
        if cell.value.std is not None:
            aggregates[f"{metric}_std/{_metric_name(variant)}"] = cell.value.std / table.scale
    tracker.log_metrics(tracker.parent_id, aggregates, step)
    return ""


def run_ablation(
    base: Config,
    variants: Mapping[str, Mapping[str, Any]],
    categories: Iterable[str],
    seeds: Iterable[int],
    options: StudyOptions,
) -> StudySummary:
    """Run every variant x category x seed on Ray Tune, each cell once, recorded in MLflow.

    Cells already finished in MLflow are skipped, unfinished ones resume from their last
    checkpoint, failed ones are retried in the same run, and cells finished with other code
    are retrained (unless ``options.keep_old_results``). The grid is declared on the study
    run; at the end the study run gets the report and the aggregate metrics per variant.

    Args:
        base: the config every variant starts from.
        variants: name -> dotted overrides of ``base`` (``{"w/o MFFM": {"fusion.mode": "none"}}``).
        categories: category names under ``base.data.root``.
        seeds: training seeds.
        options: where the study runs and records (:class:`StudyOptions`).

    Returns:
        A :class:`StudySummary`: cells, already finished, trained now, failed.
    """
    categories, seeds = list(categories), list(seeds)
    checked_data_root(base.data.root, categories)  # every problem, before anything is scheduled
    cells = ablation_cells(base, variants, categories, seeds)
    tracker = StudyTracker(options.tracking_uri, options.name, view_metrics=TEST_METRICS)
    finished, reused, code_changes = _stale_cells(cells, tracker, options.keep_old_results)
    pending = [cell for cell in cells if cell.key not in finished and cell.key not in reused]
    summary = StudySummary(
        options.name,
        len(cells),
        len(cells) - len(pending),
        0,
        tracking_uri=options.tracking_uri,
        code_changes=code_changes,
        ui_link=tracker.ui_link(),
    )
    log(
        f"study {options.name}: {len(cells)} cells, {len(cells) - len(pending)} already finished, "
        f"{len(pending)} to run" + (f"; {code_changes}" if code_changes else "")
    )
    log(_where(options))
    step = tracker.declare_grid(_grid(options.name, variants, cells, seeds, reused))
    if pending:
        init_ray()
        names = {cell.key: cell.name for cell in cells}
        tuner, recorder = _tuner(
            {"cell": tune.grid_search([cell.spec() for cell in pending])},
            options,
            tracker,
            lambda params: params["cell"],
            tune.TuneConfig(
                max_concurrent_trials=options.max_concurrent_trials,
                reuse_actors=True,
                trial_name_creator=lambda trial: names[trial.config["cell"]["key"]].replace(
                    " / ", "_"
                ),
                trial_dirname_creator=lambda trial: trial.config["cell"]["key"],
            ),
            experiment=f"{options.name}-ablation",
            total=len(pending),
        )
        _fit(tuner, options.verbose)
        summary.trained = len(recorder.finished)
        summary.mlflow_outage = recorder.outage_report()
        summary.failed = [names[key] for key in recorder.failed]
    summary.report_note = record_study_report(tracker, step)
    tracker.close_study({"cells": len(cells), "failed": len(summary.failed)})
    return summary


# ---- hyper-parameter search ----

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
    if not metric.startswith("val_"):
        raise ValueError(f"HPO must optimise a validation metric (val_*), not {metric!r}")
    categories = [categories] if isinstance(categories, str) else list(categories)
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
    import optuna

    checked_data_root(base.data.root, categories)  # every problem, before anything is scheduled
    plan = SearchPlan(base, categories, seed)
    objective = f"{METRICS}/{metric}"  # the trainable's metrics, as Tune flattens them
    log(
        f"study {options.name}: {trials} trials of {len(categories)} categories each, "
        f"objective mean {metric} ({base.validation.strategy} validation anomalies)"
    )
    log(_where(options))
    tracker = StudyTracker(
        options.tracking_uri, options.name, view_metrics=(f"best_{metric}", *TEST_METRICS)
    )
    init_ray()
    search = OptunaSearch(
        space=space,
        metric=objective,
        mode="max",
        sampler=sampler or optuna.samplers.TPESampler(seed=seed),
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=base.train.epochs + 1,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )
    tuner, recorder = _tuner(
        {},
        options,
        tracker,
        plan.spec_for,
        tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
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
    results = _fit(tuner, options.verbose)
    best = results.get_best_result(metric=objective, mode="max", scope="all")
    overrides = plan.overrides(best.config)
    out = out or storage.join(options.storage(), options.name, "best_config.json")
    record = {
        "study": options.name,
        "metric": metric,
        "categories": categories,
        "value": best.metrics_dataframe[objective].max(),
        "overrides": overrides,
        "config": plan.config_for(overrides).to_flat(),
    }
    storage.write_text(str(out), json.dumps(record, indent=2, default=float) + "\n")
    tracker.close_study({"trials": trials, "failed": len(recorder.failed), "best_config": out})
    log(
        f"best mean {metric} over {', '.join(categories)}: {record['value']:.4f} with "
        f"{overrides}\nbest config: {out}"
    )
    return str(out)


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
