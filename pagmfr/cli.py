"""The ``pagmfr`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pagmfr.categories import KINDS


def _data_synth(args: argparse.Namespace) -> int:
    from pagmfr.data import check_dataset, make_synthetic_dataset

    out = make_synthetic_dataset(
        args.out,
        categories=args.categories,
        image_size=args.image_size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(check_dataset(out, args.categories).format())
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from pagmfr.data import check_dataset

    report = check_dataset(args.root, args.category)
    print(report.format())
    return 0 if report.ok else 1


def _generator_preview(args: argparse.Namespace) -> int:
    from pagmfr.anomalies.preview import write_preview

    path = write_preview(
        args.out,
        strategy=args.strategy,
        category_kind=args.category_kind,
        image=args.image,
        samples=args.samples,
        image_size=args.image_size,
        seed=args.seed,
        texture_dir=args.texture_dir,
        object_dir=args.object_dir,
    )
    print(f"preview written to {path}")
    return 0


def _config_from_args(args: argparse.Namespace):
    from pagmfr.config import Config, parse_set_arguments

    overrides = {
        "method": args.method,
        "data.root": args.data,
        "data.category": args.category,
        "data.image_size": args.image_size,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "backbone.name": args.backbone,
        "backbone.weights": args.weights,
        "train.seed": args.seed,
        "train.device": args.device,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.update(parse_set_arguments(args.set))
    return Config().with_overrides(overrides)


def _train(args: argparse.Namespace) -> int:
    from pagmfr.engine import train

    config = _config_from_args(args)
    out = Path(args.out or f"runs/{config.method}_{config.data.category}")
    metrics = train(config, out, resume=not args.no_resume, full_resolution=args.full_resolution)
    _print_metrics(metrics, out)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pagmfr.engine import evaluate

    metrics = evaluate(
        args.checkpoint,
        args.data,
        args.category,
        args.out,
        full_resolution=args.full_resolution,
        device=args.device or "auto",
    )
    _print_metrics(metrics, Path(args.out))
    if metrics["transfer_from"]:
        print(
            f"a transfer: trained on {metrics['transfer_from']}, tested on "
            f"{metrics['config']['data.category']} (pagmfr report leaves it out of its tables "
            "unless --include-transfers)"
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pagmfr.engine import predict

    for result in predict(args.checkpoint, args.images, args.out, device=args.device or "auto"):
        print(f"{result['score']:.6f}  {result['image']}")
    print(f"heatmaps, scores.json and maps.npz in {args.out}")
    return 0


def _print_metrics(metrics: dict, out: Path) -> None:
    from pagmfr.engine import TEST_METRICS

    for key in TEST_METRICS:
        print(f"{key:<14} {metrics[key]:.4f}")
    print(
        f"epoch {metrics['best_epoch'] + 1} tested ({metrics['selection_protocol']}); "
        f"written to {out / 'metrics.json'}"
    )


def _report(args: argparse.Namespace) -> int:
    from pagmfr.records import default_tracking_uri
    from pagmfr.report import report_folders, report_study

    options = {
        "metrics": args.metrics,
        "reference": args.reference,
        "formats": args.format,
        "decimals": args.decimals,
        "percent": not args.raw,
        "code_version": args.code_version,
        "mix_code_versions": args.mix_code_versions,
        "test_over": args.test_over,
        "alpha": args.alpha,
    }
    if args.folders:
        report = report_folders(
            args.folders, args.out, include_transfers=args.include_transfers, **options
        )
    elif args.study:
        uri = args.tracking_uri or default_tracking_uri()
        report = report_study(uri, args.study, args.out, **options)
    else:
        raise ValueError("give --study NAME (with --tracking-uri) or one or more training folders")
    print(
        f"{len(report.tables)} table(s); {report.duplicates_dropped} duplicate run(s) dropped; "
        f"{len(report.missing)} missing cell(s)"
    )
    if report.transfers_left_out:
        print(
            f"{report.transfers_left_out} transfer evaluation(s) left out (a checkpoint tested "
            "on another category; --include-transfers reports them)"
        )
    for path in report.files:
        print(f"  {path}")
    return 0


def _method_name(name: str) -> str:
    """``--method``'s check, against the registry (imported only when the option is used)."""
    from pagmfr.models import available_methods

    if name not in available_methods():
        raise argparse.ArgumentTypeError(
            f"invalid choice: {name!r} (choose from {', '.join(available_methods())})"
        )
    return name


def _alpha(text: str) -> float:
    """``--alpha``'s check: the report's own rule and message, before any run is read."""
    from pagmfr.report.ranks import check_alpha

    try:
        return check_alpha(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _names(text: str) -> list[str]:
    """A comma-separated option's names, refused where parsed when none is left (``,,``)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing: give names separated by commas")
    return names


def _decimals(text: str) -> int:
    """A count of decimals: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of decimals (0, 1, 2, ...)")
    return value


def _study_status(args: argparse.Namespace) -> int:
    from pagmfr.records import default_tracking_uri
    from pagmfr.study.status import study_status

    status = study_status(args.tracking_uri or default_tracking_uri(), args.name)
    print(status.render(), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pagmfr.demo import readme_drift, run_demo

    if args.check_table is None:
        run_demo(Path(args.out))
        return 0
    drift = readme_drift(args.check_table, args.readme)
    print(f"warning: {drift}" if drift else f"the demo's table matches {args.readme}")
    return 0


DEBUG_HELP = "show the traceback of an error"
PREDICT_OUTPUTS = (
    "Writes a heatmap per image into --out, at the image's path under the folder that holds "
    "every input, named <stem>_heatmap.png: test/good/000.png and test/crack/000.png give "
    "good/000_heatmap.png and crack/000_heatmap.png, so two inputs never share an output "
    "(images of one folder that share a stem, 000.png and 000.jpg, keep their extension: "
    "000.png_heatmap.png). A folder stands for every image in it and its subfolders (hidden "
    "ones skipped). scores.json lists each image, its heatmap and its score; maps.npz holds "
    "the raw maps at model resolution."
)


def _command(commands, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that takes ``--debug`` after its name too (``pagmfr train ... --debug``)."""
    command = commands.add_parser(name, **kwargs)
    command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return command


def _tracking_uri_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--tracking-uri",
        help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its options; each command imports what it needs only when run."""
    parser = argparse.ArgumentParser(prog="pagmfr", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="datasets: MVTec AD, 3D-AD, AD 2, VisA, plain folders")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    synth = _command(data_commands, "synth", help="write the embedded synthetic dataset")
    synth.add_argument("out", type=Path, help="folder to write (MVTec AD layout)")
    synth.add_argument("--categories", nargs="+", help="default: all embedded categories")
    synth.add_argument("--image-size", type=int, default=128)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the categories already in OUT (default: refuse; others there are kept)",
    )
    synth.set_defaults(run=_data_synth)
    check = _command(data_commands, "check", help="count images and masks, list every problem")
    check.add_argument("root", type=Path)
    check.add_argument("--category", nargs="+", help="default: every category under ROOT")
    check.set_defaults(run=_data_check)

    pseudo = commands.add_parser("generator", help="the pseudo-anomaly generator")
    pseudo_commands = pseudo.add_subparsers(dest="generator_command", required=True)
    preview = _command(
        pseudo_commands, "preview", help="grid of original / pseudo-anomalous / mask samples"
    )
    preview.add_argument("--strategy", required=True, help="texture, object, adaptive, none, ...")
    preview.add_argument("--category-kind", choices=KINDS, default="object")
    preview.add_argument("--image", type=Path, help="a normal image (default: a built-in photo)")
    preview.add_argument("--samples", type=int, default=6)
    preview.add_argument("--image-size", type=int, default=256)
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--texture-dir", type=Path)
    preview.add_argument("--object-dir", type=Path)
    preview.add_argument("--out", type=Path, required=True, help="PNG file to write")
    preview.set_defaults(run=_generator_preview)

    train = _command(commands, "train", help="train, then evaluate the selected checkpoint on test")
    train.add_argument(
        "--data",
        help='a dataset folder (MVTec AD, VisA, MVTec AD 2, plain folders: README, "Datasets"), '
        'or "synthetic" (the default)',
    )
    train.add_argument("--category")
    train.add_argument(
        "--method",
        type=_method_name,
        help="a registered method: pagmfr, rgpkd, ... (default pagmfr)",
    )
    train.add_argument("--image-size", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--backbone")
    train.add_argument("--weights", help='"imagenet", "none" or a state-dict path')
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    train.add_argument("--out", help="output folder (default runs/<method>_<category>)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. --set loss.focal=2 --set fusion.mode=add",
    )
    train.add_argument("--no-resume", action="store_true", help="start over even if last.pt exists")
    train.add_argument(
        "--full-resolution", action="store_true", help="test metrics at the images' own size"
    )
    train.set_defaults(run=_train)

    evaluate = _command(commands, "evaluate", help="test metrics of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, type=Path)
    evaluate.add_argument("--data")
    evaluate.add_argument(
        "--category",
        help="test on another category than the checkpoint's: recorded as a transfer "
        "(transfer_from: its training category), left out of `pagmfr report` by default",
    )
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--full-resolution", action="store_true")
    evaluate.add_argument("--device")
    evaluate.set_defaults(run=_evaluate)

    predict = _command(
        commands,
        "predict",
        help="anomaly maps and scores for new images",
        description=PREDICT_OUTPUTS,
    )
    predict.add_argument("--checkpoint", required=True, type=Path)
    predict.add_argument(
        "images", nargs="+", type=Path, help="image files, or folders: every image in them"
    )
    predict.add_argument("--out", required=True)
    predict.add_argument("--device")
    predict.set_defaults(run=_predict)

    report = _command(commands, "report", help="ablation tables from a study (or training folders)")
    report.add_argument(
        "folders",
        nargs="*",
        help="stand-alone `pagmfr train` or `pagmfr evaluate` folders (metrics.json)",
    )
    report.add_argument(
        "--include-transfers",
        action="store_true",
        help="with folders: also report evaluations of a checkpoint on another category than "
        "it was trained on, each as a variant of its own (default: left out)",
    )
    _tracking_uri_option(report)
    report.add_argument("--study", help="the study's name (its MLflow experiment)")
    report.add_argument("--metrics", type=_names, default="image_auroc,pixel_auroc,au_pro")
    report.add_argument(
        "--reference", help='the variant others are compared with (default "full model")'
    )
    report.add_argument("--format", type=_names, default="latex,md,csv,html")
    report.add_argument("--decimals", type=_decimals, default=1)
    report.add_argument("--raw", action="store_true", help="values as fractions, not percent")
    report.add_argument(
        "--code-version",
        help="report the runs of this code version (a code_version or code_fingerprint tag); "
        "default: the code each declared cell was run with",
    )
    report.add_argument(
        "--mix-code-versions",
        action="store_true",
        help="allow runs of several code versions in one table (the report names them)",
    )
    report.add_argument(
        "--test-over",
        choices=["categories", "category-seed"],
        default="categories",
        help="what the Wilcoxon tests pair: per-category means, or every category x seed",
    )
    report.add_argument(
        "--alpha",
        type=_alpha,
        default=0.05,
        help="significance level of the critical-difference diagrams' tests (Friedman, then "
        "Holm-corrected pairwise Wilcoxon over category x seed blocks); default 0.05",
    )
    report.add_argument("--out", required=True)
    report.set_defaults(run=_report)

    study = commands.add_parser("study", help="studies recorded in MLflow")
    study_commands = study.add_subparsers(dest="study_command", required=True)
    status = _command(
        study_commands, "status", help="every declared cell: finished, running, failed, missing"
    )
    status.add_argument("name", help="the study's name (its MLflow experiment)")
    _tracking_uri_option(status)
    status.set_defaults(run=_study_status)

    demo = _command(commands, "demo", help="the quickstart's main job on the embedded data")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument(
        "--check-table",
        type=Path,
        metavar="COMPONENTS_MD",
        help="instead: compare a demo report's components.md with the README's table",
    )
    demo.add_argument("--readme", type=Path, default=Path("README.md"))
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input or a failed run prints one line naming the file or key and
    exits 2 (an unexpected error: 1); ``--debug`` adds the traceback."""
    from pagmfr.errors import run_command

    args = build_parser().parse_args(argv)
    return run_command(lambda: args.run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
