"""Building blocks and anomaly-map post-processing shared by both methods."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from pagmfr.models.backbone import build_backbone
from pagmfr.scoring import ScoringSettings

if TYPE_CHECKING:
    from pagmfr.config import Config


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions with batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def upsample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to ``size``; a no-op at that size already."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ImageDecoder(nn.Module):
    """From features at stride ``stride`` to an RGB image in [0, 1]: x2 upsampling steps."""

    def __init__(self, in_channels: int, stride: int):
        super().__init__()
        steps, channels, blocks = int(math.log2(stride)), in_channels, []
        for _ in range(steps):
            out = max(channels // 2, 16)
            blocks += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                ConvBlock(channels, out),
            ]
            channels = out
        self.body = nn.Sequential(*blocks)
        self.head = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return torch.sigmoid(upsample_to(self.head(self.body(features)), size))


def smooth(anomaly_map: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, 1, H, W) with ``sigma`` pixels (0: unchanged)."""
    if sigma <= 0:
        return anomaly_map
    kernel = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(anomaly_map, [kernel, kernel], [sigma, sigma])


def smooth_and_score(
    anomaly_map: torch.Tensor, settings: ScoringSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """The map smoothed with ``settings.smoothing_sigma`` (B, 1, H, W) and image scores (B,):
    the max or the mean of the top k (``score``, ``topk``) of the map smoothed with
    ``score_sigma``. Two sigmas because a map is smoothed for localisation, while a blur as wide
    would dilute a thin defect's peak in the score."""
    sigma, score_sigma = settings.smoothing_sigma, settings.score_sigma
    smoothed = smooth(anomaly_map, sigma)
    scored = smoothed if score_sigma == sigma else smooth(anomaly_map, score_sigma)
    flat = scored.flatten(1)
    if settings.score == "max":
        return smoothed, flat.amax(dim=1)
    return smoothed, flat.topk(min(settings.topk, flat.shape[1]), dim=1).values.mean(dim=1)


class MapStats(nn.Module):
    """Mean and standard deviation of ``n_maps`` maps of the clean training images, fitted
    exactly by :meth:`fit` (a method's ``calibrate``): one per map (``size`` None: over every
    pixel), or one per map and pixel position (at ``size`` x ``size``; other sizes are
    resampled). ``normalise`` z-scores maps with them; per pixel, it removes offsets every
    image shares at a position (a decoder's border artefacts) that one mean/std per map
    cannot."""

    def __init__(self, n_maps: int, size: int | None = None):
        super().__init__()
        self.per_pixel = size is not None
        shape = (n_maps, size, size) if self.per_pixel else (n_maps, 1, 1)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("square", torch.ones(shape))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def _moments(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and mean square of ``maps`` over the batch (per pixel) or over every pixel."""
        maps = maps.float()
        if self.per_pixel:
            maps = upsample_to(maps, self.mean.shape[-2:])
            return maps.mean(dim=0), maps.pow(2).mean(dim=0)
        return (
            maps.mean(dim=(0, 2, 3)).view(-1, 1, 1),
            maps.pow(2).mean(dim=(0, 2, 3)).view(-1, 1, 1),
        )

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Replace the statistics by the exact mean and square of every map in ``batches``
        ((B, n_maps, H, W) each, of normal images), weighted by image."""
        total, mean, square = 0, torch.zeros_like(self.mean), torch.zeros_like(self.square)
        for maps in batches:
            batch_mean, batch_square = self._moments(maps)
            total += maps.shape[0]
            mean += (batch_mean - mean) * maps.shape[0] / total
            square += (batch_square - square) * maps.shape[0] / total
        if total:
            self.mean.copy_(mean)
            self.square.copy_(square)
            self.updates.fill_(total)

    def normalise(self, maps: torch.Tensor) -> torch.Tensor:
        std = (self.square - self.mean.pow(2)).clamp_min(0).sqrt()
        # a pixel's std never below a tenth of the map's median one: no division by ~0
        std = torch.maximum(std, 0.1 * std.flatten(1).median(dim=1).values.view(-1, 1, 1))
        size = maps.shape[-2:]
        mean = upsample_to(self.mean[None], size)
        std = upsample_to(std[None], size).clamp_min(1e-6)
        return (maps - mean.to(maps.dtype)) / std.to(maps.dtype)


def over_run_backbone(cls: type, config: Config, settings: Any, **extra: Any) -> Any:
    """``cls`` built as a registered factory builds a method that distils or reconstructs the
    run's backbone: that backbone (``backbone.name`` at ``backbone.layers``), the method's own
    ``settings``, the shared scoring, the run's resolution and seed, and ``extra``."""
    return cls(
        build_backbone(config.backbone.name, config.backbone.layers),
        settings,
        config.anomaly,
        image_size=config.data.image_size,
        seed=config.train.seed,
        **extra,
    )
