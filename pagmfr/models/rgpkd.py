"""RGPKD: reconstruction-guided, prompt-based knowledge distillation.

A frozen teacher backbone gives multi-scale features of a normal image; a student learns to
reproduce them scale by scale, guided by a reconstruction of the input from its last decoder
stage. The default student is reverse distillation's decoder over a one-class bottleneck of the
teacher's features (symmetric, OCBE); the U-Net student whose own encoder sees the image (unet, the
"asymmetric" design) scores below chance on textures with random weights: through its skips
it maps flat defect regions more easily than the normal texture (README, "RGPKD"). A prompt
bank of teacher features of training images is built once; for each input the most similar
entries (cosine similarity of pooled deep features) are retrieved and fused into the decoder.
At test time the student fails to reproduce the teacher where the image is anomalous: the
anomaly map is the max over scales of the cosine distance, each z-scored per pixel position
on normal training images (``rgpkd.map_norm``, ``rgpkd.map_combine``).

Switches for the ablation: ``rgpkd.prompts`` (no bank: the student trains and tests without
prompts), ``rgpkd.reconstruction``, ``rgpkd.student`` (symmetric | unet), ``rgpkd.bottleneck``
(one_class | plain), ``rgpkd.map_norm``, ``rgpkd.map_combine``, ``rgpkd.map_scales``, the
loss weights
and the backbone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pagmfr.backbones import STAGE_STRIDES
from pagmfr.losses import (
    cosine_distance_map,
    feature_distillation_loss,
    image_reconstruction_losses,
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
from pagmfr.models.coreset import greedy_coreset
from pagmfr.models.feature_cache import cached_features, fill_cache, numbered
from pagmfr.scoring import ScoringSettings
from pagmfr.settings import Check, setting

if TYPE_CHECKING:
    from pagmfr.config import Config

_UNET_CHANNELS = (64, 128, 256, 512)  # ResNet-18 stages


@dataclass
class RGPKDSettings:
    """RGPKD's own knobs: the config section ``rgpkd.*``, plus the reconstruction weights
    ``loss.image_mse`` and ``loss.image_ssim``."""

    prompts: bool = True
    reconstruction: bool = True
    #: symmetric: reverse distillation's decoder over the teacher's deepest features (default,
    #: chosen by measurement); unet: a U-Net student with its own encoder over the image.
    student: Literal["unet", "symmetric"] = "symmetric"
    #: Prompt bank: at most this many training images, in at most this much memory (float16).
    bank_size: int = 256
    bank_max_mb: float = 512.0
    #: How the bank is subsampled when it must shrink: random, or a k-centre coreset.
    bank_sampling: Literal["random", "coreset"] = "random"
    topk: int = 1
    distillation: float = 1.0
    #: Where the U-Net student fuses the prompts: into each decoder stage, so the fused
    #: features flow on to the shallower stages (decoder, as the method describes), or only
    #: before the output heads (heads). The symmetric student always fuses in its decoder.
    prompt_fusion: Literal["heads", "decoder"] = "heads"
    #: Each scale's distance map as it is (none), z-scored per pixel position (pixel, default)
    #: or with one mean and std per scale (global), with statistics of the normal training
    #: images under the current student (refitted before every validation): a distance is
    #: judged against what the student gets wrong on normal images. With random backbone
    #: weights, raw distances ranked real defects below normal pixels (transistor: pixel AUROC
    #: 0.53 after 15 epochs), z-scored per pixel 0.82. With ImageNet EfficientNet-Lite0 at
    #: 224 px (transistor, 20 epochs, seeds 0-1) one mean and std per scale (global) raised
    #: image AUROC by 0.075 and lowered AU-PRO by 0.026 (README, "Quality"): pixel stays.
    map_norm: Literal["none", "pixel", "global"] = "pixel"
    #: How the scales' maps become one: the max over scales (default: a defect that one
    #: scale sees is not averaged away by the others), or their sum. Measured with map_norm
    #: pixel, 15 epochs, seed 0: transistor pixel AUROC 0.822 (max) vs 0.748 (sum), embedded
    #: coins image AUROC 0.54 vs 0.42; equal within noise on the other embedded categories.
    map_combine: Literal["max", "sum"] = "max"
    #: Which scales' distances enter the map: all (default), or all but the deepest (which
    #: still trains the student and keys the prompt bank). A one-stage backbone keeps its one
    #: scale either way. The deepest scale sees the context a misplaced or missing part
    #: changes: on transistor, z-scored, it is the best single scale (pixel AUROC 0.86).
    map_scales: Literal["all", "drop_deepest"] = "all"
    #: The symmetric student's bottleneck: plain (a conv block over the teacher's deepest
    #: features, at their resolution and width), or one_class (reverse distillation's OCBE:
    #: every used scale strided down and fused, then a stride-2 block to twice the deepest
    #: width at half its resolution), a tighter code that a defect passes less easily.
    bottleneck: Literal["plain", "one_class"] = "one_class"
    #: The reconstruction guidance's weights, under the keys PAGMFR's reconstruction uses too.
    image_mse: float = setting(1.0, key="loss.image_mse")
    image_ssim: float = setting(1.0, key="loss.image_ssim")

    def checks(self) -> list[Check]:
        return [
            ("bank_size", self.bank_size >= 1, "must be >= 1"),
            ("topk", self.topk >= 1, "must be >= 1"),
            ("bank_max_mb", self.bank_max_mb > 0, "must be > 0"),
            ("distillation", self.distillation >= 0, "must be >= 0"),
            ("image_mse", self.image_mse >= 0, "must be >= 0"),
            ("image_ssim", self.image_ssim >= 0, "must be >= 0"),
        ]


def _pooled(feature: torch.Tensor) -> torch.Tensor:
    return F.normalize(feature.float().mean(dim=(2, 3)), dim=1)


class PromptBank(nn.Module):
    """Teacher features of training images (float16) with their pooled, normalised deepest
    feature as the retrieval key and ``ids``, the training-set position of each entry's image.
    Buffers are sized when filled or loaded from a checkpoint."""

    def __init__(self, n_scales: int):
        super().__init__()
        self.n_scales = n_scales
        self.register_buffer("keys", torch.zeros(0))
        self.register_buffer("ids", torch.zeros(0, dtype=torch.long))
        for i in range(n_scales):
            self.register_buffer(f"scale{i}", torch.zeros(0))

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])

    def entries(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale features of ``index`` (B, k) -> list of (B, k, C, h, w)."""
        return [getattr(self, f"scale{i}")[index].float() for i in range(self.n_scales)]

    def fill(
        self, keys: torch.Tensor, features: list[torch.Tensor], ids: torch.Tensor | None = None
    ) -> None:
        self.keys = keys.float()
        self.ids = (
            torch.arange(keys.shape[0], device=keys.device) if ids is None else ids.long()
        ).to(keys.device)
        for i, feature in enumerate(features):
            setattr(self, f"scale{i}", feature.half())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ["keys", "ids"] + [f"scale{i}" for i in range(self.n_scales)]:
            if prefix + name in state_dict:  # adopt the saved bank's size before copying
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def retrieve(
        self, query: torch.Tensor, topk: int, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Indices (B, k) of the most similar entries. ``exclude`` (B,): each query's own
        training-set position; the entry of that image is never returned (it would make the
        prompt a copy of the answer). Excluding by identity, not by a similarity threshold,
        holds under any precision (bf16 self-similarity can fall below 1 - 1e-5)."""
        similarity = query.float() @ self.keys.T
        if exclude is not None:
            own = self.ids.unsqueeze(0) == exclude.to(self.ids.device).view(-1, 1)
            similarity = similarity.masked_fill(own, -math.inf)
        k = min(topk, self.size - (1 if exclude is not None and self.size > 1 else 0))
        return similarity.topk(max(k, 1), dim=1).indices


def select_bank_entries(keys: torch.Tensor, count: int, sampling: str, seed: int) -> torch.Tensor:
    """``count`` entries: a seeded random subsample, or a greedy k-centre coreset of the keys
    (each next entry the one farthest from those chosen), which covers rare appearances."""
    total = keys.shape[0]
    if count >= total:
        return torch.arange(total)
    if sampling == "random":
        order = np.random.default_rng(seed).permutation(total)[:count]
        return torch.from_numpy(np.sort(order))
    # on unit keys, Euclidean distance orders pairs as 1 - cosine does
    return greedy_coreset(keys.float().cpu(), count, seed).sort().values


class PromptFusion(nn.Module):
    """Affinity fusion of a retrieved prompt into decoder features: both are projected, their
    per-position cosine affinity gates the prompt, and a 1x1 conv mixes it into the features.
    (Full attention at the finest scale would need a 4096 x 4096 matrix per 256 px image.)"""

    def __init__(self, decoder_channels: int, prompt_channels: int):
        super().__init__()
        self.query = nn.Conv2d(decoder_channels, decoder_channels, 1)
        self.key = nn.Conv2d(prompt_channels, decoder_channels, 1)
        self.temperature = nn.Parameter(torch.tensor(5.0))
        self.mix = nn.Conv2d(2 * decoder_channels, decoder_channels, 1)

    def forward(self, decoded: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        if prompt is None:  # prompts switched off at inference: the prompt half is empty
            return self.mix(torch.cat([decoded, torch.zeros_like(decoded)], dim=1))
        key = self.key(upsample_to(prompt, decoded.shape[-2:]))
        affinity = torch.sigmoid(
            self.temperature * F.cosine_similarity(self.query(decoded), key, dim=1)
        ).unsqueeze(1)
        return self.mix(torch.cat([decoded, affinity * key], dim=1))


class UNetStudent(nn.Module):
    """A ResNet-18-style encoder over the image and a U-Net decoder that emits features at the
    teacher's strides (one head per used teacher stage) and, from its last stage, the image."""

    def __init__(
        self,
        teacher_layers: tuple[int, ...],
        teacher_channels: list[int],
        prompts: bool,
        reconstruction: bool,
        prompt_fusion: str = "heads",
    ):
        super().__init__()
        self.prompt_fusion = prompt_fusion
        encoder = torchvision.models.resnet18(weights=None)
        self.stem = nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu, encoder.maxpool)
        self.encoder = nn.ModuleList(
            [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]
        )
        self.layers = teacher_layers
        c = _UNET_CHANNELS
        self.decoder = nn.ModuleDict(
            {
                "4": ConvBlock(c[3], c[3]),
                "3": ConvBlock(c[3] + c[2], c[2]),
                "2": ConvBlock(c[2] + c[1], c[1]),
                "1": ConvBlock(c[1] + c[0], c[0]),
            }
        )
        self.heads = nn.ModuleList(
            nn.Conv2d(c[layer - 1], channels, 1)
            for layer, channels in zip(teacher_layers, teacher_channels, strict=True)
        )
        self.fusions = (
            nn.ModuleList(
                PromptFusion(c[layer - 1], ch)
                for layer, ch in zip(teacher_layers, teacher_channels, strict=True)
            )
            if prompts
            else None
        )
        self.image = ImageDecoder(c[0], STAGE_STRIDES[0]) if reconstruction else None

    def forward(
        self,
        images: torch.Tensor,
        teacher_features: list[torch.Tensor],
        prompts: list[torch.Tensor] | None,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        skips, x = [], self.stem(images)
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        in_decoder = self.fusions is not None and self.prompt_fusion == "decoder"

        def fused(stage: int, feature: torch.Tensor) -> torch.Tensor:
            i = self.layers.index(stage)
            return self.fusions[i](feature, None if prompts is None else prompts[i])

        decoded: dict[int, torch.Tensor] = {4: self.decoder["4"](skips[3])}
        if in_decoder and 4 in self.layers:
            decoded[4] = fused(4, decoded[4])
        for stage in (3, 2, 1):
            up = upsample_to(decoded[stage + 1], skips[stage - 1].shape[-2:])
            decoded[stage] = self.decoder[str(stage)](torch.cat([up, skips[stage - 1]], dim=1))
            if in_decoder and stage in self.layers:  # fused features flow on to the next stage
                decoded[stage] = fused(stage, decoded[stage])
        outputs = []
        for i, layer in enumerate(self.layers):
            feature = decoded[layer]
            if self.fusions is not None and not in_decoder:
                feature = fused(layer, feature)
            outputs.append(self.heads[i](feature))
        image = None if self.image is None else self.image(decoded[1], images.shape[-2:])
        return outputs, image


def _strided(in_channels: int, out_channels: int) -> nn.Sequential:
    """A 3x3 stride-2 conv with batch norm and ReLU: half the resolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class OneClassBottleneck(nn.Module):
    """Reverse distillation's OCBE (Deng & Li, CVPR 2022): multi-scale feature fusion (each
    used scale strided down to the deepest one's resolution, concatenated, mixed by a 1x1
    conv), then a one-class embedding block at half that resolution and twice the width."""

    def __init__(self, channels: list[int], strides: list[int]):
        super().__init__()
        deepest = channels[-1]
        self.down = nn.ModuleList(
            nn.Sequential(*(_strided(c, c) for _ in range(int(math.log2(strides[-1] // stride)))))
            for c, stride in zip(channels, strides, strict=True)
        )
        self.mix = nn.Sequential(
            nn.Conv2d(sum(channels), deepest, 1, bias=False),
            nn.BatchNorm2d(deepest),
            nn.ReLU(inplace=True),
        )
        self.embed = nn.Sequential(
            _strided(deepest, 2 * deepest), ConvBlock(2 * deepest, 2 * deepest)
        )
        self.out_channels = 2 * deepest

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[-1].shape[-2:]
        fused = [upsample_to(down(f), size) for down, f in zip(self.down, features, strict=True)]
        return self.embed(self.mix(torch.cat(fused, dim=1)))


class _DeepestBlock(ConvBlock):
    """The plain bottleneck: a conv block over the deepest features only."""

    def __init__(self, channels: int):
        super().__init__(channels, channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(features[-1])


class SymmetricStudent(nn.Module):
    """Reverse distillation's student: a bottleneck over the teacher's features (``plain``: the
    deepest used ones; ``one_class``: OCBE over all) and a decoder mirroring the teacher's
    stages back up to its shallowest used one."""

    def __init__(
        self,
        teacher_channels: list[int],
        teacher_strides: list[int],
        prompts: bool,
        reconstruction: bool,
        bottleneck: str,
    ):
        super().__init__()
        self.strides = teacher_strides
        deepest = teacher_channels[-1]
        if bottleneck == "one_class":
            self.bottleneck = OneClassBottleneck(teacher_channels, teacher_strides)
            code = self.bottleneck.out_channels
        else:
            self.bottleneck = _DeepestBlock(deepest)
            code = deepest
        self.blocks = nn.ModuleList(
            ConvBlock(teacher_channels[i + 1] if i + 1 < len(teacher_channels) else code, c)
            for i, c in enumerate(teacher_channels)
        )
        self.fusions = (
            nn.ModuleList(PromptFusion(c, c) for c in teacher_channels) if prompts else None
        )
        self.image = (
            ImageDecoder(teacher_channels[0], teacher_strides[0]) if reconstruction else None
        )

    def forward(
        self,
        images: torch.Tensor,
        teacher_features: list[torch.Tensor],
        prompts: list[torch.Tensor] | None,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        x = self.bottleneck(teacher_features)
        outputs: list[torch.Tensor] = [None] * len(teacher_features)  # type: ignore[list-item]
        for i in reversed(range(len(teacher_features))):
            x = self.blocks[i](upsample_to(x, teacher_features[i].shape[-2:]))
            if self.fusions is not None:
                x = self.fusions[i](x, None if prompts is None else prompts[i])
            outputs[i] = x
        image = None if self.image is None else self.image(outputs[0], images.shape[-2:])
        return outputs, image


class RGPKD(AnomalyMethod):
    """RGPKD: a student learns to reproduce a frozen teacher's multi-scale features of normal
    images, helped by prompts retrieved from a bank of training features and guided by a
    reconstruction of the input; where the image is anomalous the student fails, and the
    per-scale cosine distance to the teacher is the anomaly map.

    Trains on normal images only, with a linear warm-up then linear decay, as its authors do.

    Args:
        teacher: the frozen feature extractor; its ``layers`` are the scales distilled.
        settings: RGPKD's own knobs (:class:`RGPKDSettings`).
        scoring: how the map is smoothed and scored.
        image_size: the input resolution (per-pixel map statistics are kept at it).
        seed: the prompt bank's subsample.
    """

    default_scheduler = "warmup_linear"
    uses_pseudo_anomalies = False

    def __init__(
        self,
        teacher: FrozenBackbone,
        settings: RGPKDSettings | None = None,
        scoring: ScoringSettings | None = None,
        *,
        image_size: int = 256,
        seed: int = 0,
    ):
        super().__init__()
        self.settings = settings = settings or RGPKDSettings()
        self.scoring = scoring or ScoringSettings()
        self.seed = seed
        self.teacher = teacher
        channels, strides = self.teacher.channels, self.teacher.strides
        if settings.student == "unet":
            self.student = UNetStudent(
                self.teacher.layers,
                channels,
                settings.prompts,
                settings.reconstruction,
                settings.prompt_fusion,
            )
        else:
            self.student = SymmetricStudent(
                channels, strides, settings.prompts, settings.reconstruction, settings.bottleneck
            )
        self.bank = PromptBank(len(channels)) if settings.prompts else None
        self.stats = (
            None
            if settings.map_norm == "none"
            else MapStats(len(channels), image_size if settings.map_norm == "pixel" else None)
        )

    @classmethod
    def from_config(cls, config: Config) -> RGPKD:
        """The registered factory: the run's backbone as teacher, RGPKD's settings, scoring."""
        return over_run_backbone(cls, config, config.rgpkd)

    # ---- the prompt bank ----

    @torch.no_grad()
    def prepare(self, batches: Iterable[torch.Tensor]) -> None:
        """Build the prompt bank from clean training images, once before training, within
        ``rgpkd.bank_size`` entries and ``rgpkd.bank_max_mb`` of memory (float16), and the
        run's feature cache with the teacher's features of them."""
        if self.bank is None:
            self.cache_training_features(batches)
            return
        settings = self.settings
        device = next(self.teacher.parameters()).device
        keys, features = [], []
        # the k-th image of ``batches`` is the training sample whose ``index`` is k
        for images, own in numbered(batches):
            scales = cached_features(self.feature_cache, self.teacher, images.to(device), own)
            keys.append(_pooled(scales[-1]).cpu())
            features.append([s.half().cpu() for s in scales])
        keys_all = torch.cat(keys)
        per_entry = sum(f.numel() // f.shape[0] * 2 for f in features[0])  # bytes in float16
        fit = max(1, int(settings.bank_max_mb * 2**20 // per_entry))
        index = select_bank_entries(
            keys_all, min(settings.bank_size, fit), settings.bank_sampling, self.seed
        )
        scales = [torch.cat([f[i] for f in features])[index] for i in range(len(features[0]))]
        self.bank.fill(keys_all[index].to(device), [s.to(device) for s in scales], index)

    def cache_training_features(self, clean_batches: Iterable[torch.Tensor]) -> None:
        """The clean training images' teacher features into the run's feature cache."""
        device = next(self.teacher.parameters()).device
        fill_cache(self.feature_cache, self.teacher, clean_batches, device)

    @torch.no_grad()
    def calibrate(self, clean_batches: Iterable[torch.Tensor]) -> None:
        """The map statistics (``rgpkd.map_norm``: per pixel or per scale) of the clean training
        images under the current student in eval mode, exactly as test maps are made.
        Statistics gathered during training would lag a student that changes every step and
        come from batch-norm's training mode: early in training they ranked defects below
        normal."""
        if self.stats is None:
            return
        device = next(self.teacher.parameters()).device

        def maps() -> Iterable[torch.Tensor]:
            # the k-th clean image is training sample k: it may not retrieve itself
            for images, own in numbered(clean_batches):
                images = images.to(device)
                teacher, student, _ = self(images, own.to(device))
                yield self.scale_maps(teacher, student, images.shape[-2:])

        self.stats.fit(maps())

    def _prompts(
        self, teacher_features: list[torch.Tensor], exclude: torch.Tensor | None = None
    ) -> list[torch.Tensor] | None:
        if self.bank is None:
            return None
        if self.bank.size == 0:
            raise RuntimeError(
                "RGPKD's prompt bank is empty: call model.prepare(training images) before use"
            )
        index = self.bank.retrieve(_pooled(teacher_features[-1]), self.settings.topk, exclude)
        return [
            entries.mean(dim=1).to(teacher_features[0].dtype)
            for entries in self.bank.entries(index)
        ]

    # ---- forward, prediction, loss ----

    def forward(
        self, images: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Teacher features, student features and the student's reconstruction (or None).
        ``index``: training images' own position in the training set (None: other images):
        their bank entries are never retrieved, and their teacher features come from the
        run's feature cache."""
        teacher = cached_features(self.feature_cache, self.teacher, images, index)
        student, reconstruction = self.student(images, teacher, self._prompts(teacher, index))
        return teacher, student, reconstruction

    def scale_maps(
        self, teacher: list[torch.Tensor], student: list[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        """Per-scale 1 - cosine(teacher, student), upsampled: (B, n_scales, H, W)."""
        return torch.cat(
            [
                upsample_to(cosine_distance_map(t, s), size)
                for t, s in zip(teacher, student, strict=True)
            ],
            dim=1,
        )

    def anomaly_map(
        self, teacher: list[torch.Tensor], student: list[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        """Max (or sum, ``rgpkd.map_combine``) over scales of the upsampled 1 - cosine(teacher,
        student), each z-scored first (``rgpkd.map_norm``: per pixel or per scale): (B, 1, H, W)."""
        settings = self.settings
        maps = self.scale_maps(teacher, student, size)
        if self.stats is not None:
            maps = self.stats.normalise(maps)
        if settings.map_scales == "drop_deepest" and maps.shape[1] > 1:
            maps = maps[:, :-1]
        if settings.map_combine == "max":
            return maps.amax(dim=1, keepdim=True)
        return maps.sum(dim=1, keepdim=True)

    def predict(self, images: torch.Tensor) -> Prediction:
        """The smoothed per-scale distance map (B, 1, H, W) and its max or top-k mean."""
        teacher, student, _ = self(images)
        return smooth_and_score(self.anomaly_map(teacher, student, images.shape[-2:]), self.scoring)

    def training_loss(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Multi-scale distillation on normal images plus, when on, reconstruction guidance
        (MSE + SSIM between the input and the student's reconstruction)."""
        images, settings = batch["image"], self.settings
        if self.bank is not None and "index" not in batch:
            raise ValueError(
                "RGPKD training batches need 'index' (each sample's training-set position) so "
                "that a sample never retrieves its own prompt-bank entry"
            )
        teacher, student, reconstruction = self(images, batch.get("index"))
        distillation = feature_distillation_loss(student, teacher)
        parts = {"distillation": distillation}
        total = settings.distillation * distillation
        if reconstruction is not None:
            parts["image_mse"], parts["image_ssim"] = image_reconstruction_losses(
                reconstruction, images
            )
            total = (
                total
                + settings.image_mse * parts["image_mse"]
                + settings.image_ssim * parts["image_ssim"]
            )
        return total, parts
