"""The command line shared by the study scripts in ``studies/``: the scripts declare what to
sweep (variants, search space, presets); this parses the options and runs it."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pagmfr.config import Config, parse_set_arguments
from pagmfr.errors import report_error
from pagmfr.records import default_tracking_uri
from pagmfr.study.options import INTERRUPTED, StudyInterrupted, StudyOptions
from pagmfr.study.presets import (
    DEMO_TRAINING,
    PAPER_TRAINING,
    SMOKE_TRAINING,
    GpusPerTrial,
    Preset,
)

ALL = "all"

__all__ = [
    "ALL",
    "DEMO_TRAINING",
    "PAPER_TRAINING",
    "SMOKE_TRAINING",
    "GpusPerTrial",
    "Preset",
    "ablation_main",
    "hpo_main",
    "variant_slug",
]


def _parser(description: str, presets: Mapping[str, Preset]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(presets), default="smoke")
    parser.add_argument(
        "--data",
        help="a dataset folder (MVTec AD, MVTec 3D-AD, VisA, MVTec AD 2 or plain folders; "
        'detected), or "synthetic" (the embedded dataset)',
    )
    parser.add_argument("--categories", nargs="+", help="default: the preset's")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the preset's")
    parser.add_argument("--name", help="study name: MLflow experiment and storage folder")
    parser.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db; "
        "http://HEAD:5000 on a cluster)",
    )
    parser.add_argument(
        "--storage-path", default="runs", help="Tune storage and cell folders (or s3://...)"
    )
    parser.add_argument("--cells-path", help="where cells train; a shared filesystem on a cluster")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument(
        "--gpus-per-trial",
        nargs="+",
        metavar="N|METHOD=N",
        help="GPUs per trial: N for every method, METHOD=N for one (rgpkd=0.5); fractions pack "
        "trials onto a GPU (default: the preset's; none)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        help="a trial's resumable checkpoint every N epochs (default: the preset's)",
    )
    parser.add_argument(
        "--max-failures", type=int, default=1, help="retries of a failing trial (0 or more)"
    )
    parser.add_argument(
        "--max-concurrent", type=int, help="trials at once (default: as resources allow)"
    )
    parser.add_argument(
        "--base-config", help="best_config.json exported by studies/hpo.py (a path or s3://...)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config"
    )
    parser.add_argument(
        "--keep-checkpoints", action="store_true", help="store best checkpoints in MLflow"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument(
        "--verbose",
        action="count",
        default=0,
        help="Ray Tune's own status tables too (-vv: its trial results as well)",
    )
    return parser


def _base_config(args: argparse.Namespace, preset: Preset) -> Config:
    from pagmfr.study.search import load_best_config

    overrides: dict[str, Any] = dict(preset.overrides)
    if args.base_config:
        overrides.update(load_best_config(args.base_config))
    data = args.data or preset.data
    if not data:
        raise SystemExit(
            f"pagmfr: error: the {args.preset} preset needs --data (an MVTec AD folder)"
        )
    overrides["data.root"] = str(data)
    overrides.update(parse_set_arguments(args.set))
    return Config().with_overrides(overrides)


def _gpus_per_trial(args: argparse.Namespace, preset: Preset) -> GpusPerTrial | None:
    if args.gpus_per_trial is None:
        return preset.gpus_per_trial
    gpus = GpusPerTrial.parse(args.gpus_per_trial, preset.gpus_per_trial)
    from pagmfr.registry import available_methods

    unknown = sorted(set(gpus.by_method) - set(available_methods()))
    if unknown:
        raise ValueError(
            f"--gpus-per-trial names unknown methods {unknown}; known: "
            f"{', '.join(available_methods())}"
        )
    return gpus


def _options(args: argparse.Namespace, default_name: str, preset: Preset):
    return StudyOptions(
        name=args.name or default_name,
        tracking_uri=args.tracking_uri,
        storage_path=args.storage_path,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=_gpus_per_trial(args, preset),
        checkpoint_every=(
            preset.checkpoint_every if args.checkpoint_every is None else args.checkpoint_every
        ),
        max_failures=args.max_failures,
        max_concurrent_trials=args.max_concurrent,
        keep_checkpoint=args.keep_checkpoints,
        cells_path=args.cells_path,
        keep_old_results=getattr(args, "keep_old_results", False),
        verbose=min(args.verbose, 2),
    )


def variant_slug(name: str) -> str:
    """A variant's name in one shell word (``w/o MFFM`` -> ``w-o-mffm``): ``ray submit`` joins
    the script's arguments without quoting, so a name with spaces would arrive as two."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _chosen_variants(
    requested: Sequence[str], variants: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Variant names from names or slugs (``all``: every variant)."""
    if list(requested) == [ALL]:
        return list(variants)
    by_word = {**{variant_slug(v): v for v in variants}, **{v: v for v in variants}}
    unknown = [v for v in requested if v not in by_word]
    if unknown:
        raise ValueError(
            f"unknown variants {unknown}; known: {', '.join(variant_slug(v) for v in variants)}"
        )
    return [by_word[v] for v in requested]


def ablation_main(
    variants: Mapping[str, Mapping[str, Any]],
    presets: Mapping[str, Preset],
    description: str,
    argv: Sequence[str] | None = None,
) -> int:
    """``studies/ablation.py``'s command line: run every variant x category x seed of a preset."""
    parser = _parser(description, presets)
    parser.add_argument(
        "--variants",
        nargs="+",
        help=f"default: the preset's; '{ALL}' or some of "
        f"{', '.join(variant_slug(v) for v in variants)} (names work too)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the cells and the resources per trial, then stop (nothing is trained)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="a dry run that also trains a few epochs of one cell per method on the cluster, "
        "for GPU-hours and storage from measured epoch times and checkpoint sizes",
    )
    parser.add_argument(
        "--keep-old-results",
        action="store_true",
        help="count cells finished with older code as done (default: retrain them)",
    )
    args = parser.parse_args(argv)
    preset = presets[args.preset]
    try:
        base = _base_config(args, preset)
        chosen = _chosen_variants(args.variants or list(preset.variants or [ALL]), variants)
        from pagmfr.study.cells import StudyGrid

        grid = StudyGrid(
            base,
            {v: variants[v] for v in chosen},
            args.categories or list(preset.categories),
            args.seeds or list(preset.seeds),
        )
        options = _options(args, f"ablation-{args.preset}", preset)
        if args.dry_run or args.calibrate:
            from pagmfr.study.estimate import dry_run

            print(f"study {options.name} (dry run)\n{dry_run(grid, options, args.calibrate)}")
            return 0
        from pagmfr.study.ablation import run_ablation

        summary = run_ablation(grid, options)
    except Exception as err:  # one line naming the file or key; --debug: the traceback
        return report_error(err, args.debug)
    print(summary.describe())
    return summary.exit_code()


def hpo_main(
    space,
    presets: Mapping[str, Preset],
    description: str,
    argv: Sequence[str] | None = None,
) -> int:
    """``studies/hpo.py``'s command line: an Optuna search on a preset's categories (the
    objective is their mean) and first seed."""
    parser = _parser(description, presets)
    parser.add_argument("--trials", type=int, help="at least 1 (default: the preset's)")
    parser.add_argument(
        "--metric",
        default="val_au_pro",
        help="the validation metric to maximise (val_au_pro, val_pixel_auroc...), averaged "
        "over --categories",
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        help="ASHA: epochs before a trial may be stopped (default: the preset's)",
    )
    parser.add_argument(
        "--reduction-factor",
        type=int,
        help="ASHA: keep 1 in N trials per rung (default: the preset's)",
    )
    parser.add_argument("--out", help="where to write best_config.json (a path or s3://...)")
    args = parser.parse_args(argv)
    preset = presets[args.preset]
    try:
        base = _base_config(args, preset)
        seed = (args.seeds or list(preset.seeds))[0]
        from pagmfr.study.search import load_best_config, run_hpo

        path = run_hpo(
            base,
            space,
            args.categories or list(preset.categories),
            preset.trials if args.trials is None else args.trials,
            _options(args, f"hpo-{args.preset}", preset),
            seed=seed,
            metric=args.metric,
            grace_period=(preset.grace_period if args.grace_period is None else args.grace_period),
            reduction_factor=(
                preset.reduction_factor if args.reduction_factor is None else args.reduction_factor
            ),
            out=args.out,
        )
        overrides = load_best_config(path)
    except StudyInterrupted as err:  # as a shell reports Ctrl-C
        report_error(err, args.debug)
        return INTERRUPTED
    except Exception as err:  # one line naming the file or key; --debug: the traceback
        return report_error(err, args.debug)
    print(f"best config: {path}\n{json.dumps(overrides, indent=2)}")
    return 0
