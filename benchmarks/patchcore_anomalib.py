"""pagmfr's PatchCore against anomalib's, on the same frozen features, in the same process.

Both models get the same seeded random-weight torchvision ResNet-18 (stages 2 and 3; anomalib's
timm extractor is swapped for it), the same training images and a 10% coreset; the table shows
image/pixel AUROC, fit time and coreset time of each. anomalib is not a pagmfr dependency: run
this from a separate environment that has it (``pip install anomalib``), with pagmfr on the
path: ``PYTHONPATH=. python benchmarks/patchcore_anomalib.py [--size 128]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's coreset progress bar, before tqdm loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import one_core  # noqa: E402
from patchcore import arguments, fit_timed, split_tensors  # noqa: E402

from pagmfr import metrics as M  # noqa: E402
from pagmfr.data import make_synthetic_dataset  # noqa: E402
from pagmfr.models import ResNetFeatures  # noqa: E402
from pagmfr.models.patchcore import PatchCore, PatchCoreSettings  # noqa: E402


class StageDict(nn.Module):
    """pagmfr's backbone behind anomalib's extractor interface: {"layer2": ..., ...}."""

    def __init__(self, backbone: ResNetFeatures):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.backbone(images)
        return {f"layer{n}": s for n, s in zip(self.backbone.layers, stages, strict=True)}


def ours(backbone, train, test, args) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    model = PatchCore(backbone, PatchCoreSettings(coreset_ratio=args.ratio), seed=args.seed)
    fit_s, coreset_s = fit_timed(model, train, args.batch)
    outputs = [model.predict(b) for b in test.split(args.batch)]
    maps, scores = torch.cat([m for m, _ in outputs]), torch.cat([s for _, s in outputs])
    return maps, scores, fit_s, coreset_s


def anomalib_patchcore(backbone, train, test, args):
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    model = PatchcoreModel(layers=["layer2", "layer3"], backbone="resnet18", pre_trained=False)
    model.feature_extractor = StageDict(backbone)
    torch.manual_seed(args.seed)  # anomalib draws its first centre from torch's global RNG
    np.random.seed(args.seed)  # and its sparse projection from NumPy's (random_state=None)
    model.train()
    start = time.perf_counter()
    with torch.no_grad():
        for batch in train.split(args.batch):
            model(batch)
        coreset_start = time.perf_counter()
        model.subsample_embedding(args.ratio)
    fit_s = time.perf_counter() - start
    coreset_s = time.perf_counter() - coreset_start
    model.eval()
    with torch.no_grad():
        outputs = [model(b) for b in test.split(args.batch)]
    maps = torch.cat([o.anomaly_map for o in outputs])
    scores = torch.cat([o.pred_score for o in outputs])
    return maps, scores, fit_s, coreset_s


def main() -> None:
    args = arguments(__doc__).parse_args()
    one_core()
    torch.set_num_threads(1)
    print(
        f"random resnet18 layers 2+3 (same weights for both), {args.size} px, coreset "
        f"{args.ratio:.0%}, seed {args.seed}, 1 thread"
    )
    print(
        f"{'category':10s} {'model':9s} {'img AUROC':>9s} {'px AUROC':>9s} {'AU-PRO':>7s} "
        f"{'fit s':>6s} {'coreset s':>9s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(tmp, args.categories, image_size=args.size)
        for category in args.categories:
            train = split_tensors(root, category, "train", args.size)["image"]
            test = split_tensors(root, category, "test", args.size)
            masks = test["mask"].reshape(len(test["mask"]), args.size, args.size) > 0.5
            for name, run in (("pagmfr", ours), ("anomalib", anomalib_patchcore)):
                torch.manual_seed(args.seed)
                backbone = ResNetFeatures("resnet18", (2, 3))
                maps, scores, fit_s, coreset_s = run(backbone, train, test["image"], args)
                maps = maps.reshape(masks.shape)
                print(
                    f"{category:10s} {name:9s} {M.image_auroc(scores, test['label']):9.3f} "
                    f"{M.pixel_auroc(maps, masks):9.3f} {M.au_pro(maps, masks):7.3f} "
                    f"{fit_s:6.2f} {coreset_s:9.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
