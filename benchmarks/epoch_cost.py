"""What a training epoch and a test image cost each method, against the frozen backbone alone.

For each method, on one category at 224 px with ImageNet EfficientNet-Lite0 (the defaults):

- the training part of one epoch (the loader and its pseudo-anomalies, backbone, head, loss
  and backward; validation apart), timed on the run's second epoch, with the feature cache
  (``train.feature_cache_mb``, the default) and without it (``0``: the same run without the
  change), each as a ratio to one backbone forward pass over the images the epoch feeds it;
- what validation adds to an epoch (``calibrate`` and the validation set);
- test-time images/s (``predict``, batch 8).

  python benchmarks/epoch_cost.py                                  # embedded brick
  python benchmarks/epoch_cost.py --data ../shared/data/mvtec_ad_256 --category transistor

Figures are on however many threads torch uses here (2 on the development machine); run it on
an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from pagmfr.config import Config
from pagmfr.engine import start_fit
from pagmfr.engine.inference import batches

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_time  # noqa: E402


@torch.no_grad()
def backbone_pass(run) -> float:
    """Seconds of one backbone forward over as many training images as an epoch feeds (the
    best of three passes: the first pays for lazy initialisation)."""
    backbone = run.model.backbone if hasattr(run.model, "backbone") else run.model.teacher
    images = torch.cat(list(run.setup.clean_batches(run.config.train.batch_size)))
    seconds, _ = best_time(lambda: [backbone(b) for b in batches(images, 8)])
    return seconds


def measure(config: Config) -> dict[str, float]:
    """One method's figures: epoch seconds, backbone seconds, validation seconds, images/s."""
    with tempfile.TemporaryDirectory() as folder:
        run = start_fit(config, folder, resume=False)
        reference = backbone_pass(run)
        figures = {"backbone": reference}
        if run.model.trains:
            run.train_epoch(0)  # the first epoch fills what prepare() did not
            figures["epoch"], _ = best_time(lambda: run.train_epoch(1), repeats=1)
            figures["validation"], _ = best_time(lambda: run.validate(1), repeats=1)
        images = run.setup.images
        run.model.eval()
        with torch.no_grad():
            run.model.predict(images[:8])  # warm-up
            seconds, _ = best_time(
                lambda: [run.model.predict(b) for b in batches(images, 8)], repeats=1
            )
        figures["images_per_second"] = len(images) / seconds
        figures["fed"] = len(run.setup.train_set)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--category", default="brick")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--methods", nargs="+", default=["pagmfr", "rgpkd", "patchcore"])
    args = parser.parse_args()
    base = {
        "data.root": args.data,
        "data.category": args.category,
        "data.image_size": args.image_size,
        "train.batch_size": 8,
        "train.epochs": 2,
        "data.num_workers": 0,
    }
    print(
        f"{args.category} at {args.image_size} px, batch 8, {torch.get_num_threads()} threads; "
        "ratios: seconds / one backbone forward over the images an epoch feeds"
    )
    for method in args.methods:
        cached = measure(Config().with_overrides({**base, "method": method}))
        if "epoch" not in cached:
            print(f"{method:>9}: training-free; test {cached['images_per_second']:.1f} images/s")
            continue
        plain = measure(
            Config().with_overrides({**base, "method": method, "train.feature_cache_mb": 0})
        )
        backbone = cached["backbone"]
        print(
            f"{method:>9}: epoch of {cached['fed']} images {cached['epoch']:.1f} s "
            f"({cached['epoch'] / backbone:.2f}x the backbone pass of {backbone:.1f} s); "
            f"without the feature cache {plain['epoch']:.1f} s "
            f"({plain['epoch'] / plain['backbone']:.2f}x; cache "
            f"{plain['epoch'] / cached['epoch']:.2f}x faster); "
            f"validation adds {cached['validation']:.1f} s "
            f"({plain['validation']:.1f} s uncached); test {cached['images_per_second']:.1f} "
            "images/s"
        )


if __name__ == "__main__":
    main()
