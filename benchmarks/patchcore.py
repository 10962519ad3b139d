"""PatchCore on the embedded dataset: image AUROC, pixel AUROC, AU-PRO, pixel F1-max, fit time
and coreset time per category, with ImageNet EfficientNet-Lite0 (the default backbone, whose
weights install with pagmfr) or any backbone and weights spec. Run:
``python benchmarks/patchcore.py [--size 128] [--backbone efficientnet_lite0] [--weights
imagenet] [--layers 2 3]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import one_core  # noqa: E402

from pagmfr import metrics as M  # noqa: E402
from pagmfr.data import SYNTHETIC_CATEGORIES, MVTecAD, make_synthetic_dataset  # noqa: E402
from pagmfr.models import build_backbone, load_backbone_weights  # noqa: E402
from pagmfr.models.patchcore import PatchCore, PatchCoreSettings  # noqa: E402


def split_tensors(root: Path, category: str, split: str, size: int) -> dict[str, torch.Tensor]:
    data = MVTecAD(root, category, split, size)
    items = [data[i] for i in range(len(data))]
    return {
        key: torch.stack([torch.as_tensor(item[key]) for item in items])
        for key in ("image", "mask", "label")
    }


def evaluate(model: PatchCore, test: dict[str, torch.Tensor], batch: int) -> dict[str, float]:
    """The four numbers papers report, on the test split."""
    outputs = [model.predict(images) for images in test["image"].split(batch)]
    maps = torch.cat([m for m, _ in outputs])[:, 0].numpy()
    scores = torch.cat([s for _, s in outputs]).numpy()
    masks, labels = test["mask"].reshape(maps.shape).numpy() > 0.5, test["label"].numpy()
    return {
        "image_auroc": M.image_auroc(scores, labels),
        "pixel_auroc": M.pixel_auroc(maps, masks),
        "au_pro": M.au_pro(maps, masks),
        "pixel_f1_max": M.f1_max(maps, masks),
    }


def fit_timed(model: PatchCore, train: torch.Tensor, batch: int) -> tuple[float, float]:
    """Seconds for ``prepare`` (features + coreset) and for the coreset alone, timed on the
    same features in a second, identical selection."""
    start = time.perf_counter()
    model.prepare(train.split(batch))
    fit_s = time.perf_counter() - start
    with torch.no_grad():
        features = torch.cat([model.embed(b) for b in train.split(batch)])
        features = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    start = time.perf_counter()
    model.coreset_indices(features)
    return fit_s, time.perf_counter() - start


def run_category(root: Path, category: str, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(args.seed)  # random backbone weights, with --weights none
    backbone = build_backbone(args.backbone, tuple(args.layers))
    load_backbone_weights(backbone, args.weights)
    model = PatchCore(backbone, PatchCoreSettings(coreset_ratio=args.ratio), seed=args.seed)
    train = split_tensors(root, category, "train", args.size)["image"]
    fit_s, coreset_s = fit_timed(model, train, args.batch)
    metrics = evaluate(model, split_tensors(root, category, "test", args.size), args.batch)
    return {**metrics, "fit_s": fit_s, "coreset_s": coreset_s, "bank": model.bank_size}


def arguments(description: str) -> argparse.ArgumentParser:
    """The options both PatchCore benchmarks take: image size, coreset ratio, batch, seed,
    categories."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", nargs="+", default=list(SYNTHETIC_CATEGORIES))
    return parser


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a state dict")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    one_core()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(tmp, args.categories, image_size=args.size)
        print(
            f"PatchCore, {args.backbone} ({args.weights}) layers {args.layers}, {args.size} px, "
            f"coreset {args.ratio:.0%}, seed {args.seed}, 1 thread"
        )
        print(
            f"{'category':10s} {'img AUROC':>9s} {'px AUROC':>9s} {'AU-PRO':>7s} "
            f"{'px F1max':>8s} {'fit s':>6s} {'coreset s':>9s} {'bank':>6s}"
        )
        rows = []
        for category in args.categories:
            row = run_category(root, category, args)
            rows.append(row)
            print(
                f"{category:10s} {row['image_auroc']:9.3f} {row['pixel_auroc']:9.3f} "
                f"{row['au_pro']:7.3f} {row['pixel_f1_max']:8.3f} {row['fit_s']:6.2f} "
                f"{row['coreset_s']:9.2f} {row['bank']:6d}",
                flush=True,
            )
        mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        print(
            f"{'mean':10s} {mean['image_auroc']:9.3f} {mean['pixel_auroc']:9.3f} "
            f"{mean['au_pro']:7.3f} {mean['pixel_f1_max']:8.3f} {mean['fit_s']:6.2f} "
            f"{mean['coreset_s']:9.2f}"
        )


if __name__ == "__main__":
    main()
