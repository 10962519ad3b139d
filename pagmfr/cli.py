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
        args.out, categories=args.categories, image_size=args.image_size, seed=args.seed
    )
    print(check_dataset(out, args.categories).format())
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from pagmfr.data import check_dataset

    report = check_dataset(args.root, args.category)
    print(report.format())
    return 0 if report.ok else 1


def _synth_preview(args: argparse.Namespace) -> int:
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


def _demo(args: argparse.Namespace) -> int:
    from pagmfr.demo import run_demo

    run_demo(Path(args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagmfr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="datasets in the MVTec AD layout")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    synth = data_commands.add_parser("synth", help="write the embedded synthetic dataset")
    synth.add_argument("out", type=Path, help="folder to write (MVTec AD layout)")
    synth.add_argument("--categories", nargs="+", help="default: all embedded categories")
    synth.add_argument("--image-size", type=int, default=128)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_data_synth)
    check = data_commands.add_parser("check", help="count images and masks, list every problem")
    check.add_argument("root", type=Path)
    check.add_argument("--category", nargs="+", help="default: every category under ROOT")
    check.set_defaults(run=_data_check)

    pseudo = commands.add_parser("synth", help="pseudo-anomaly generator tools")
    pseudo_commands = pseudo.add_subparsers(dest="synth_command", required=True)
    preview = pseudo_commands.add_parser(
        "preview", help="grid of original / pseudo-anomalous / mask samples"
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
    preview.set_defaults(run=_synth_preview)

    demo = commands.add_parser("demo", help="the quickstart's main job on the embedded data")
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:  # bad input: say what and where, no traceback
        print(f"pagmfr: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
