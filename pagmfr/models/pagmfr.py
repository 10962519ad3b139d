"""PAGMFR: pseudo-anomaly generation and multi-scale feature reconstruction.

Training sees a normal image x and its pseudo-anomalous version x~ with mask M. A frozen
backbone encodes x~; the MFRM reconstructs the clean features of x at every scale and the clean
image x^; the MFFM fuses original and reconstructed features; the anomaly calculator turns
feature cosine distances, CIELAB and SSIM differences (and the fused features) into anomaly
logits. With no pseudo-anomalies (generator "none") the head has nothing to learn from, so the
map is the mean of the branch maps, each z-scored with its statistics on the clean training
images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pagmfr.losses import (
    cosine_distance_map,
    feature_distillation_loss,
    focal_loss,
    image_reconstruction_losses,
    lab_difference_map,
    ssim_map,
)
from pagmfr.models.backbone import FrozenBackbone
from pagmfr.models.base import AnomalyMethod, Prediction
from pagmfr.models.common import (
    ConvBlock,
    ImageDecoder,
    MapStats,
    over_run_backbone,
    smooth_and_score,
    upsample_to,
)
from pagmfr.models.feature_cache import (
    cached_features,
    fill_cache,
    numbered,
    rows_through_cache,
)
from pagmfr.models.memory import PatchMemory, local_patch_features
from pagmfr.scoring import ScoringSettings
from pagmfr.settings import Check, stages_check

if TYPE_CHECKING:
    from pagmfr.config import Config

_LAB_SCALE = 100.0  # Delta E of 100 is about the largest colour difference: scale to ~[0, 1]
_PRIOR = 0.01  # the share of defective pixels an untrained learned head assumes


@dataclass
class ReconstructionSettings:
    """The multi-scale feature reconstruction module (``mfrm.*``)."""

    #: Which backbone scales enter the reconstruction decoder: all (a 1x1 lateral at every
    #: scale, U-Net/FPN-like: shallow scales can pass a defect straight through to their
    #: reconstruction) or deepest (the decoder starts from the deepest scale only and must
    #: reconstruct the shallower ones from it).
    skips: Literal["all", "deepest"] = "all"


@dataclass
class FusionSettings:
    """The multi-scale feature fusion module (``fusion.*``)."""

    #: MFFM: concat (channel concatenation + conv, as in the paper), add, or none (no module).
    mode: Literal["concat", "add", "none"] = "concat"
    channels: int = 64

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [("channels", self.channels >= 1, "must be >= 1")]


@dataclass
class CalculatorSettings:
    """The anomaly calculator (PAGMFR's ``anomaly.*`` keys; the scoring keys every method
    reads, ``anomaly.smoothing_sigma`` and the score, are shared): branches, head, evidence."""

    # The defaults were chosen by measurement: map_output and knn on the embedded dataset,
    # head_form, map_fusion and knn_coreset on the real MVTec AD category at hand too, with
    # random backbone weights; map_norm and head_init with ImageNet EfficientNet-Lite0
    # (benchmarks/quality.py; README, "Quality").
    #: Which maps feed the anomaly head: feature (cosine), image (CIELAB + SSIM), or both.
    branches: Literal["feature", "image", "both"] = "both"
    #: The learned head: auto (learned when training sees pseudo-anomalies, else the mean of
    #: normalised branch maps), learned, or none.
    head: Literal["auto", "learned", "none"] = "auto"
    hidden: int = 32
    #: The map (and so the score) before smoothing: the sigmoid of the head's logits, or the
    #: logits themselves. The sigmoid saturates: many test images tie at a score of ~1.
    map_output: Literal["sigmoid", "logits"] = "logits"
    #: z-scoring per branch map with one mean/std each (global), or per map and pixel position
    #: (pixel: removes offsets every image shares at a position, such as a decoder's border
    #: artefacts). Both are fitted on the clean training images under the current weights
    #: before every validation (``calibrate``). Global by measurement with ImageNet features:
    #: per pixel, the patch memory's distances lost AU-PRO on transistor (0.944 -> 0.925).
    map_norm: Literal["global", "pixel"] = "global"
    #: The learned head: an MLP from the z-scored maps (and fused features) to the logits
    #: (mlp), or a learned linear combination of the z-scored maps, starting as their mean,
    #: plus that MLP with its last layer starting at zero (residual): an untrained head then
    #: gives the unsupervised map, not a random projection of it, and training reweights the
    #: maps and corrects it from there.
    #: linear: that learned linear combination alone (no MLP; the fused features would have
    #: no consumer, so no MFFM is built): the head can reweight its evidence, not invert it
    #: through appearance features learned on the pseudo-anomalies.
    #: gated: the z-scored maps weighted at each pixel by positive weights that the MLP
    #: predicts from them and the fused features (starting as their mean), plus a learned
    #: offset: the fused features decide where to trust which evidence, but cannot invent or
    #: invert evidence.
    #: Default linear, by measurement on real MVTec AD (transistor, 25 epochs): the residual
    #: head's map fell from 0.93 to 0.84 pixel AUROC as it learned the pseudo-anomalies' look
    #: (gated: to 0.62), the linear head's stayed at 0.86-0.89 (README, "Quality").
    head_form: Literal["mlp", "residual", "linear", "gated"] = "linear"
    #: Where the linear part of a head starts: the mean of the z-scored maps (mean), or the
    #: normal-feature evidence alone (evidence, with ``knn``): an untrained model is then
    #: PatchCore's evidence, and training adds the other maps as far as pseudo-anomalies show
    #: they help.
    head_init: Literal["mean", "evidence"] = "evidence"
    #: Normal-feature evidence: one more branch map, the nearest-neighbour distance of the
    #: input's patch features (PatchCore-style: 3x3-averaged frozen-backbone features of
    #: ``knn_layers``, resized to the finest and concatenated) to those of the clean training
    #: images, gathered once before training. A training image is scored against the other
    #: training images only (leave-one-image-out), as an unseen test image will be.
    knn: bool = True
    #: The anomaly map when the head is learned and ``knn`` is on: the head's output alone
    #: (head), or that output plus the patch memory's z-scored distances (head+knn). The head
    #: learns from pseudo-anomalies, which real defects need not resemble: the evidence itself
    #: stays in the map.
    map_fusion: Literal["head", "head+knn"] = "head+knn"
    #: Backbone stages the patch features come from (must be among backbone.layers).
    knn_layers: tuple[int, ...] = (2, 3)
    #: Share of the training patches kept in memory (greedy k-centre coreset; 1: all): 10%, as
    #: PatchCore's. Every training step compares its patches with the whole memory: keeping
    #: all of them made a CPU epoch 4x as long (benchmarks/train_step.py).
    knn_coreset: float = 0.1
    #: At most this much memory (float32 entries; the coreset's greedy order is cut to fit),
    #: which checkpoints carry.
    knn_max_bank_mb: float = 64.0

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [
            ("hidden", self.hidden >= 1, "must be >= 1"),
            stages_check("knn_layers", self.knn_layers),
            ("knn_coreset", 0.0 < self.knn_coreset <= 1.0, "must be in (0, 1]"),
            ("knn_max_bank_mb", self.knn_max_bank_mb > 0, "must be > 0"),
        ]


@dataclass
class LossSettings:
    """Loss weights (``loss.*``): image reconstruction, features, focal."""

    image_mse: float = 1.0
    image_ssim: float = 1.0
    feature: float = 1.0
    focal: float = 1.0
    focal_gamma: float = 2.0
    #: Class weight of defective pixels; -1 turns weighting off (as in DRAEM): defects are sparse.
    focal_alpha: float = -1.0

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        weights = ("image_mse", "image_ssim", "feature", "focal", "focal_gamma")
        return [(name, getattr(self, name) >= 0.0, "must be >= 0") for name in weights] + [
            ("focal_alpha", -1.0 <= self.focal_alpha <= 1.0, "must be in [-1, 1] (<0: off)")
        ]


@dataclass
class PAGMFRSettings:
    """PAGMFR's own knobs, under the keys users write: ``mfrm.*``, ``fusion.*``, PAGMFR's
    ``anomaly.*`` and ``loss.*``."""

    mfrm: ReconstructionSettings = field(default_factory=ReconstructionSettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    anomaly: CalculatorSettings = field(default_factory=CalculatorSettings)
    loss: LossSettings = field(default_factory=LossSettings)


class FeatureReconstruction(nn.Module):
    """MFRM: a top-down decoder from the pseudo-anomalous features to the clean features at
    every used scale (deep to shallow, each scale seeing the one below), and the clean image.
    ``skips="all"`` feeds every scale's features in through a 1x1 lateral conv; ``"deepest"``
    only the deepest scale's, so shallower scales are reconstructed, not copied."""

    def __init__(self, channels: list[int], stride: int, max_width: int = 256, skips: str = "all"):
        super().__init__()
        widths = [min(c, max_width) for c in channels]
        n = len(widths)
        used = range(n) if skips == "all" else [n - 1]
        self.lateral = nn.ModuleDict({str(i): nn.Conv2d(channels[i], widths[i], 1) for i in used})
        self.blocks = nn.ModuleList(
            ConvBlock((w if str(i) in self.lateral else 0) + (widths[i + 1] if i < n - 1 else 0), w)
            for i, w in enumerate(widths)
        )
        self.heads = nn.ModuleList(
            nn.Conv2d(w, c, 1) for c, w in zip(channels, widths, strict=True)
        )
        self.image = ImageDecoder(widths[0], stride)

    def forward(
        self, features: list[torch.Tensor], size: tuple[int, int]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        hidden, reconstructed = None, [None] * len(features)
        for i in reversed(range(len(features))):
            parts = []
            if str(i) in self.lateral:
                parts.append(self.lateral[str(i)](features[i]))
            if hidden is not None:
                parts.append(upsample_to(hidden, features[i].shape[-2:]))
            hidden = self.blocks[i](torch.cat(parts, dim=1))
            reconstructed[i] = self.heads[i](hidden)
        return reconstructed, self.image(hidden, size)


class FeatureFusion(nn.Module):
    """MFFM: per scale, fuse original and reconstructed features (concat + conv, or add), bring
    every scale to the finest one's resolution and mix them into one tensor."""

    def __init__(self, channels: list[int], mode: str, out_channels: int):
        super().__init__()
        self.mode = mode
        width = 2 if mode == "concat" else 1
        self.per_scale = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width * c, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
            for c in channels
        )
        self.mix = nn.Sequential(
            nn.Conv2d(out_channels * len(channels), out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(
        self, original: list[torch.Tensor], reconstructed: list[torch.Tensor]
    ) -> torch.Tensor:
        size = original[0].shape[-2:]
        fused = []
        for layer, f, r in zip(self.per_scale, original, reconstructed, strict=True):
            pair = torch.cat([f, r], dim=1) if self.mode == "concat" else f + r
            fused.append(upsample_to(layer(pair), size))
        return self.mix(torch.cat(fused, dim=1))


class AnomalyCalculator(nn.Module):
    """Branch maps (feature cosine distances per scale; CIELAB and 1 - SSIM between x~ and x^;
    the patch memory's distances) plus the fused features, turned into anomaly logits at input
    resolution by 1x1 convs over the z-scored maps."""

    def __init__(
        self,
        n_scales: int,
        branches: str,
        fused_channels: int,
        hidden: int,
        learned: bool,
        knn: bool = False,
        pixel_stats: int = 0,
        head_form: str = "residual",
        head_init: str = "evidence",
    ):
        """``pixel_stats``: the map size (square) for per-pixel statistics; 0: global.
        ``head_form`` (a learned head): mlp, an MLP of the z-scored maps and fused features;
        residual, a 1x1 conv of the z-scored maps plus that MLP with its output layer at zero;
        linear, the 1x1 conv alone; gated, the z-scored maps weighted per pixel by positive
        weights the MLP predicts (starting as their mean) plus a learned offset. ``head_init``:
        the 1x1 conv starts as the maps' mean, or (with ``knn``) as the evidence alone."""
        super().__init__()
        self.branches = branches
        self.head_form = head_form if learned else None
        n_maps = (
            (n_scales if branches in ("feature", "both") else 0)
            + (2 if branches in ("image", "both") else 0)
            + (1 if knn else 0)
        )
        self.reduce = nn.Conv2d(fused_channels, hidden, 1) if fused_channels else None
        inputs = n_maps + (hidden if fused_channels else 0)
        outputs = n_maps if head_form == "gated" else 1
        self.head = (
            nn.Sequential(
                nn.Conv2d(inputs, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, outputs, 1),
            )
            if learned and head_form != "linear"
            else None
        )
        if self.head is not None and head_form in ("residual", "gated"):
            nn.init.zeros_(self.head[-1].weight)  # the untrained head is its linear part
            nn.init.zeros_(self.head[-1].bias)
        self.linear = None
        if learned and head_form in ("residual", "linear"):
            self.linear = nn.Conv2d(n_maps, 1, 1)
            # the logits start at the prior of a rare defective pixel (1%, as RetinaNet's focal
            # loss starts): the focal loss then learns the maps' weights from the first step
            # instead of spending hundreds on the offset (which the map's ranking ignores)
            nn.init.constant_(self.linear.bias, -math.log((1 - _PRIOR) / _PRIOR))
            if head_init == "evidence" and knn:  # the patch memory's map comes last
                nn.init.zeros_(self.linear.weight)
                nn.init.constant_(self.linear.weight[:, -1], 1.0)
            else:
                nn.init.constant_(self.linear.weight, 1.0 / n_maps)
        self.gate_bias = self.offset = None
        if learned and head_form == "gated":
            self.gate_bias = nn.Parameter(torch.zeros(n_maps))  # softplus(0) = log 2 each
            self.offset = nn.Parameter(torch.zeros(1))
        # Mean/std of each branch map on the clean training images under the current weights
        # (fitted by PAGMFR.calibrate): the head sees z-scores; the unsupervised map is their
        # mean.
        self.stats = MapStats(n_maps, pixel_stats or None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if any(key.startswith(prefix + "fusion_stats.") for key in state_dict):
            raise RuntimeError(
                "it was trained by PAGMFR before pagmfr had ImageNet weights, whose map z-scored "
                "the head's output with statistics gathered during training; its map cannot be "
                "made again: retrain it"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalise(self, maps: torch.Tensor) -> torch.Tensor:
        """z-scores of the branch maps with the fitted statistics (global or per pixel)."""
        return self.stats.normalise(maps)

    def branch_maps(
        self,
        image: torch.Tensor,
        reconstruction: torch.Tensor,
        features: list[torch.Tensor],
        reconstructed: list[torch.Tensor],
        knn: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, n_maps, H, W); ``knn``, the patch memory's distance map, comes last."""
        size = image.shape[-2:]
        maps = []
        if self.branches in ("feature", "both"):
            maps += [
                upsample_to(cosine_distance_map(f, r), size)
                for f, r in zip(features, reconstructed, strict=True)
            ]
        if self.branches in ("image", "both"):
            maps.append(lab_difference_map(image, reconstruction) / _LAB_SCALE)
            maps.append(1.0 - ssim_map(image, reconstruction))
        if knn is not None:
            maps.append(upsample_to(knn, size))
        return torch.cat(maps, dim=1)

    def forward(
        self, maps: torch.Tensor, fused: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (B, 1, H, W) from the raw branch ``maps`` and the fused features, and the
        z-scored maps."""
        normalised = self.normalise(maps)
        return self._head(normalised, fused), normalised

    def _head(self, normalised: torch.Tensor, fused: torch.Tensor | None) -> torch.Tensor:
        if self.head_form is None:
            return normalised.mean(dim=1, keepdim=True)
        if self.head_form == "linear":
            return self.linear(normalised)
        inputs = [normalised]  # branch maps differ in scale by 100x: the head sees z-scores
        if self.reduce is not None:
            inputs.append(upsample_to(self.reduce(fused), normalised.shape[-2:]))
        out = self.head(torch.cat(inputs, dim=1))
        if self.head_form == "gated":
            weights = F.softplus(out + self.gate_bias.view(1, -1, 1, 1)) / (
                math.log(2) * normalised.shape[1]
            )
            return (weights * normalised).sum(dim=1, keepdim=True) + self.offset
        if self.linear is not None:
            out = out + self.linear(normalised)
        return out


@dataclass
class PAGMFROutput:
    """Everything one forward pass computes; the loss needs more of it than prediction."""

    logits: torch.Tensor  # (B, 1, H, W); z-scored branch mean when unsupervised
    #: (B, 1, H, W): the smoothed logits (or their sigmoid), with the patch memory's z-scored
    #: evidence added under ``anomaly.map_fusion=head+knn``
    anomaly_map: torch.Tensor
    score: torch.Tensor  # (B,)
    reconstruction: torch.Tensor  # x^, (B, 3, H, W)
    features: list[torch.Tensor]  # backbone features of the input
    reconstructed: list[torch.Tensor]  # MFRM's clean-feature estimates


class PAGMFR(AnomalyMethod):
    """PAGMFR: a frozen backbone encodes a (pseudo-anomalous) image; the MFRM reconstructs the
    clean features at every used scale and the clean image; the MFFM fuses original and
    reconstructed features; the anomaly calculator turns their differences into a map.

    Trained on pseudo-anomalies (focal loss on the head's logits against their masks, plus
    reconstruction losses); without them (``pseudo_anomalies`` False) the head is not built
    and the map is the mean of the normalised branch maps. The maps' statistics are fitted on
    the clean training images before training and before every validation (``calibrate``),
    never during training steps, so the head trains against a normalisation that holds still.

    Args:
        backbone: the frozen feature extractor; its ``layers`` are the scales used.
        settings: PAGMFR's own knobs (:class:`PAGMFRSettings`).
        scoring: how the map is smoothed and scored.
        image_size: the input resolution (per-pixel map statistics are kept at it).
        seed: the patch memory's coreset.
        pseudo_anomalies: whether training batches carry pseudo-anomalies (``head=auto``
            learns a head only then).
    """

    default_scheduler = "cosine"
    uses_pseudo_anomalies = True

    def __init__(
        self,
        backbone: FrozenBackbone,
        settings: PAGMFRSettings | None = None,
        scoring: ScoringSettings | None = None,
        *,
        image_size: int = 256,
        seed: int = 0,
        pseudo_anomalies: bool = True,
    ):
        super().__init__()
        self.settings = settings = settings or PAGMFRSettings()
        self.scoring = scoring or ScoringSettings()
        self.seed = seed
        anomaly, fusion = settings.anomaly, settings.fusion
        self.backbone = backbone
        channels = self.backbone.channels
        self.reconstruction = FeatureReconstruction(
            channels, self.backbone.strides[0], skips=settings.mfrm.skips
        )
        # Without pseudo-anomalies the head has nothing to learn, and the fused features feed
        # only the head: neither is built then.
        learned = anomaly.head == "learned" or (anomaly.head == "auto" and pseudo_anomalies)
        fuse = learned and fusion.mode != "none" and anomaly.head_form != "linear"
        self.fusion = FeatureFusion(channels, fusion.mode, fusion.channels) if fuse else None
        self.calculator = AnomalyCalculator(
            len(channels),
            anomaly.branches,
            fusion.channels if fuse else 0,
            anomaly.hidden,
            learned,
            knn=anomaly.knn,
            pixel_stats=image_size if anomaly.map_norm == "pixel" else 0,
            head_form=anomaly.head_form,
            head_init=anomaly.head_init,
        )
        self.evidence_in_map = learned and anomaly.knn and anomaly.map_fusion == "head+knn"
        self.memory = PatchMemory() if anomaly.knn else None
        self._knn_scales = (
            [self.backbone.layers.index(layer) for layer in anomaly.knn_layers]
            if anomaly.knn
            else []
        )

    @classmethod
    def from_config(cls, config: Config) -> PAGMFR:
        """The registered factory: the run's backbone, PAGMFR's settings and the scoring."""
        return over_run_backbone(
            cls, config, config.pagmfr, pseudo_anomalies=config.trains_on_pseudo_anomalies
        )

    @staticmethod
    def check_config(config: Config) -> None:
        """The rules that tie PAGMFR's settings to the run's: the evidence's stages must be
        the backbone's, and a learned head needs pseudo-anomalies to learn from."""
        anomaly = config.pagmfr.anomaly
        if anomaly.knn and not set(anomaly.knn_layers) <= set(config.backbone.layers):
            raise ValueError(
                f"anomaly.knn_layers must be among backbone.layers ({config.backbone.layers}) "
                f"when anomaly.knn is on; got {anomaly.knn_layers} (set anomaly.knn_layers to "
                "some of the backbone's stages, or anomaly.knn=false)"
            )
        if anomaly.head == "learned" and not config.trains_on_pseudo_anomalies:
            raise ValueError(
                "anomaly.head learned needs pseudo-anomalies in training; got generator.strategy "
                f"{config.generator.strategy!r}"
            )

    # ---- what comes from the clean training images ----

    @torch.no_grad()
    def prepare(self, batches: Iterable[torch.Tensor]) -> None:
        """Fill the patch memory (``anomaly.knn``) from the clean training images, given in
        training-set order (the k-th image is the sample whose ``index`` is k), and the run's
        feature cache with their features."""
        if self.memory is None:
            self.cache_training_features(batches)
            return
        device = next(self.backbone.parameters()).device
        patches, owners = [], []
        for images, own in numbered(batches):
            features = cached_features(self.feature_cache, self.backbone, images.to(device), own)
            p = self._patch_features(features)
            patches.append(p.permute(0, 2, 3, 1).reshape(-1, p.shape[1]).cpu())
            owners.append(own.repeat_interleave(p[0, 0].numel()))
        self.memory.fill(
            torch.cat(patches),
            torch.cat(owners),
            self.settings.anomaly.knn_coreset,
            self.seed,
            self.settings.anomaly.knn_max_bank_mb,
        )
        self.memory.to(device)

    def cache_training_features(self, clean_batches: Iterable[torch.Tensor]) -> None:
        """The clean training images' backbone features into the run's feature cache."""
        device = next(self.backbone.parameters()).device
        fill_cache(self.feature_cache, self.backbone, clean_batches, device)

    @torch.no_grad()
    def calibrate(self, clean_batches: Iterable[torch.Tensor]) -> None:
        """The branch maps' statistics, fitted exactly on the clean training images in eval
        mode under the current weights, as test maps are made (a training image's evidence
        leaves its own patches out). Running averages updated during training steps lagged
        weights that move every step, and came from batch-norm's training mode."""
        device = next(self.backbone.parameters()).device

        def maps() -> Iterable[torch.Tensor]:
            for images, own in numbered(clean_batches):
                images, own = images.to(device), own.to(device)
                features = cached_features(self.feature_cache, self.backbone, images, own)
                evidence = self._evidence(features, own, own)
                reconstructed, reconstruction = self.reconstruction(features, images.shape[-2:])
                yield self.calculator.branch_maps(
                    images, reconstruction, features, reconstructed, evidence
                )

        self.calculator.stats.fit(maps())

    def _patch_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        return local_patch_features([features[i] for i in self._knn_scales])

    def knn_map(
        self, features: list[torch.Tensor], exclude: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The patch memory's distance map (None without ``anomaly.knn``)."""
        if self.memory is None:
            return None
        return self.memory.distances(self._patch_features(features), exclude)

    def _evidence(
        self, features: list[torch.Tensor], keys: torch.Tensor, exclude: torch.Tensor
    ) -> torch.Tensor | None:
        """The patch memory's distance maps of training images (each leaving its own patches
        out): an unaltered image's (``keys`` >= 0) through the run's feature cache."""
        if self.memory is None:
            return None

        def compute(rows: list[int]) -> list[torch.Tensor]:
            return [self.knn_map([f[rows] for f in features], exclude[rows])]

        with torch.no_grad():
            return rows_through_cache(
                self.feature_cache, "evidence", keys.tolist(), compute, keys.device
            )[0]

    # ---- forward, prediction, loss ----

    def forward(
        self,
        images: torch.Tensor,
        features: list[torch.Tensor] | None = None,
        evidence: torch.Tensor | None = None,
    ) -> PAGMFROutput:
        """The maps of ``images``; ``features`` and ``evidence`` (the patch memory's map), when
        given, are the backbone's and the memory's for them (training passes its cached
        ones)."""
        size = images.shape[-2:]
        if features is None:
            with torch.no_grad():
                features = self.backbone(images)
        if evidence is None and self.memory is not None:
            evidence = self.knn_map(features, None)
        reconstructed, reconstruction = self.reconstruction(features, size)
        fused = None if self.fusion is None else self.fusion(features, reconstructed)
        maps = self.calculator.branch_maps(
            images, reconstruction, features, reconstructed, evidence
        )
        logits, normalised = self.calculator(maps, fused)
        values = logits.float()
        if self.settings.anomaly.map_output == "sigmoid":
            values = torch.sigmoid(values)
        if self.evidence_in_map:
            values = values + normalised[:, -1:].float()
        anomaly_map, score = smooth_and_score(values, self.scoring)
        return PAGMFROutput(logits, anomaly_map, score, reconstruction, features, reconstructed)

    def predict(self, images: torch.Tensor) -> Prediction:
        """Anomaly maps (B, 1, H, W) (in [0, 1] with the sigmoid output) and scores (B,)."""
        output = self(images)
        return output.anomaly_map, output.score

    def training_loss(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted sum of image reconstruction (MSE + SSIM), clean-feature reconstruction and,
        when the head is learned, focal loss against the pseudo-anomaly mask. The backbone runs
        once per batch, over the images no earlier epoch encoded: the altered pseudo-anomalous
        ones, and the clean ones the feature cache does not hold (a sample left unaltered is its
        clean image)."""
        weights = self.settings.loss
        clean, pseudo = batch["image"], batch["pseudo"]
        index = batch.get("index")
        if index is None:  # not a training set's samples: nothing is known twice
            index = torch.full((len(clean),), -1, dtype=torch.long, device=clean.device)
        # a pseudo-anomalous sample's key: its image's when left unaltered (compared, not read
        # off its mask: a registered strategy may alter pixels it does not mark), else -1
        unaltered = (pseudo == clean).flatten(1).all(dim=1)
        keys = torch.where(unaltered, index, torch.full_like(index, -1))
        both = cached_features(
            self.feature_cache, self.backbone, torch.cat([clean, pseudo]), torch.cat([index, keys])
        )
        clean_features = [f[: len(clean)] for f in both]
        features = [f[len(clean) :] for f in both]
        output = self(pseudo, features, self._evidence(features, keys, index))
        mse, ssim_term = image_reconstruction_losses(output.reconstruction, clean)
        feature = feature_distillation_loss(output.reconstructed, clean_features)
        parts = {"image_mse": mse, "image_ssim": ssim_term, "feature": feature}
        total = weights.image_mse * mse + weights.image_ssim * ssim_term + weights.feature * feature
        if self.calculator.head_form is not None:
            parts["focal"] = focal_loss(
                output.logits, batch["mask"], weights.focal_gamma, weights.focal_alpha
            )
            total = total + weights.focal * parts["focal"]
        return total, parts
