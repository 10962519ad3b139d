"""PatchCore (Roth et al., CVPR 2022, "Towards Total Recall in Industrial Anomaly Detection").

No training: a frozen backbone's locally aware patch features of clean images fill a memory
bank, subsampled by a greedy k-centre coreset; a test patch's anomaly score is its distance to
the nearest bank feature, and an image's score is its largest patch score, reweighted by how
unusual that patch's nearest bank feature is among its own neighbours (the paper's eq. 7).

Choices where the paper leaves room (each one documented at its argument):
- local aggregation: a p x p average with zero padding counted at the border, as the
  authors' code (unfold with zero padding, then average) and anomalib do. Averaging only the
  positions inside the map instead sharpens border patches, whose larger distances then
  dominate small maps (at 64 px: pixel AUROC 0.47-0.60 instead of 0.73-0.79);
- feature dimension: the stages' aggregated features are concatenated (as anomalib does);
  ``embedding_dim`` instead reduces them by adaptive average pooling over channels, as the
  paper does for WideResNet-50 (1536 -> 1024), per stage and then jointly;
- coreset distances: a seeded Gaussian random projection to ``projection_dim`` dimensions
  (the authors' code projects to 128); the bank holds the unprojected features.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pagmfr.models.backbone import FrozenBackbone, build_backbone
from pagmfr.models.base import AnomalyMethod, Prediction
from pagmfr.models.common import smooth, upsample_to
from pagmfr.models.coreset import bounded_coreset
from pagmfr.models.memory import local_patch_features
from pagmfr.settings import Check, stages_check

if TYPE_CHECKING:
    from pagmfr.config import Config

_BYTES_PER_VALUE = 4  # the bank is float32


def reweighted_scores(
    test_features: torch.Tensor,
    nearest_features: torch.Tensor,
    neighbour_features: torch.Tensor,
    scores: torch.Tensor,
) -> torch.Tensor:
    """Eq. 7: s = (1 - exp|m_test - m*| / sum_{m in N_b(m*)} exp|m_test - m|) s*, where
    ``nearest_features`` (B, D) are m*, ``neighbour_features`` (B, b - 1, D) the rest of
    N_b(m*) and ``scores`` (B,) are s*. A softmax, so large distances cannot overflow."""
    support = torch.cat([nearest_features[:, None], neighbour_features], dim=1)
    distances = torch.linalg.vector_norm(support - test_features[:, None], dim=2)
    return (1 - torch.softmax(distances, dim=1)[:, 0]) * scores


@dataclass
class PatchCoreSettings:
    """PatchCore's own knobs: the config section ``patchcore.*``. The backbone's architecture
    and weights are the study's (``backbone.name``, ``backbone.weights``); its stages are
    PatchCore's own, 2 and 3 as in the paper."""

    #: The backbone stages whose features are aggregated (the paper: 2 and 3).
    layers: tuple[int, ...] = (2, 3)
    #: Fraction of the training patches kept in the bank (paper: 0.1 or 0.01; 1.0 keeps every
    #: patch and skips the coreset).
    coreset_ratio: float = 0.1
    #: The bank (float32) never exceeds this; when the coreset would, its greedy order is cut
    #: where the bound is reached (a smaller coreset of the same run).
    max_bank_mb: float = 256.0
    #: b in eq. 7, the size of m*'s neighbourhood in the bank; 1 turns the reweighting off
    #: (the image score is then the largest patch score).
    neighbours: int = 9
    #: p, the neighbourhood of the local aggregation (odd).
    patch_size: int = 3
    #: Channels after adaptive average pooling, or None to concatenate the stages.
    embedding_dim: int | None = None
    #: Dimensions of the random projection used only for the coreset's distances, or None to
    #: select on the features themselves.
    projection_dim: int | None = 128
    #: Bound on each query-to-bank distance block while predicting.
    query_chunk_mb: float = 64.0

    def checks(self) -> list[Check]:
        return [
            stages_check("layers", self.layers),
            ("coreset_ratio", 0 < self.coreset_ratio <= 1, "must be in (0, 1]"),
            ("max_bank_mb", self.max_bank_mb > 0, "must be > 0"),
            ("neighbours", self.neighbours >= 1, "must be >= 1"),
            (
                "patch_size",
                self.patch_size >= 1 and self.patch_size % 2 == 1,
                "must be odd",
            ),
            (
                "embedding_dim",
                self.embedding_dim is None or self.embedding_dim >= 1,
                "must be >= 1",
            ),
            (
                "projection_dim",
                self.projection_dim is None or self.projection_dim >= 1,
                "must be >= 1",
            ),
            ("query_chunk_mb", self.query_chunk_mb > 0, "must be > 0"),
        ]


class PatchCore(AnomalyMethod):
    """PatchCore around a frozen backbone: training-free, ``prepare`` fits the memory bank.

    Args:
        backbone: the frozen feature extractor; its ``layers`` are the stages used.
        settings: the knobs (see :class:`PatchCoreSettings`), checked here.
        smoothing_sigma: Gaussian blur of the upsampled anomaly map, in input pixels (paper: 4).
        seed: the projection matrix and the coreset's first centre.
    """

    trains = False

    def __init__(
        self,
        backbone: FrozenBackbone,
        settings: PatchCoreSettings | None = None,
        smoothing_sigma: float = 4.0,
        seed: int = 0,
    ):
        super().__init__()
        self.settings = settings or PatchCoreSettings()
        failed = [f"{k} {why}" for k, holds, why in self.settings.checks() if not holds]
        if failed:
            raise ValueError(f"PatchCore settings: {'; '.join(failed)}")
        self.backbone = backbone
        self.smoothing_sigma = smoothing_sigma
        self.seed = seed
        self.register_buffer("memory_bank", torch.zeros(0, 0))

    @classmethod
    def from_config(cls, config: Config) -> PatchCore:
        """The registered factory: the study's backbone at PatchCore's own stages."""
        settings = config.patchcore
        backbone = build_backbone(config.backbone.name, settings.layers)
        return cls(backbone, settings, config.anomaly.smoothing_sigma, config.train.seed)

    @property
    def bank_size(self) -> int:
        return int(self.memory_bank.shape[0])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "memory_bank")
        if saved is not None:  # adopt the saved bank's size before copying
            self.memory_bank = self.memory_bank.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features (B, D, h, w) of images in [0, 1]."""
        return local_patch_features(
            self.backbone(images), self.settings.patch_size, self.settings.embedding_dim
        )

    @torch.no_grad()
    def prepare(self, batches: Iterable[torch.Tensor]) -> None:
        """Fill the memory bank from clean training images: every patch feature, subsampled
        by the greedy coreset to ``coreset_ratio`` and capped at ``max_bank_mb``. All patch
        features are held while selecting (the bound is on the bank, not on this step)."""
        device = self.memory_bank.device
        features = torch.cat(
            [_flat(self.embed(images.to(device))) for images in batches]
        ).contiguous()
        self.memory_bank = features[self.coreset_indices(features)]

    def coreset_indices(self, features: torch.Tensor) -> torch.Tensor:
        """Indices of the bank entries among ``features`` (N, D), in greedy order."""
        settings = self.settings
        return bounded_coreset(
            features, settings.coreset_ratio, settings.max_bank_mb, self.seed,
            settings.projection_dim,
        )  # fmt: skip

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        """Anomaly maps (B, 1, H, W) and image scores (B,) for images in [0, 1]."""
        if self.bank_size == 0:
            raise RuntimeError("the memory bank is empty: call prepare() or load a checkpoint")
        with torch.autocast(images.device.type, enabled=False):  # distances need float32
            embedding = self.embed(images)
            batch, _, height, width = embedding.shape
            features = _flat(embedding).float()
            distance, nearest = self.nearest_bank_entries(features)
            patch_scores = distance.reshape(batch, height * width)
            scores = self.image_scores(
                features.reshape(batch, height * width, -1),
                patch_scores,
                nearest.reshape(batch, height * width),
            )
            maps = upsample_to(patch_scores.reshape(batch, 1, height, width), images.shape[-2:])
            maps = smooth(maps, self.smoothing_sigma)
        return maps, scores

    def nearest_bank_entries(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance (Q,) to, and index (Q,) of, each query's nearest bank feature, computed
        in blocks of at most ``query_chunk_mb`` so memory stays bounded."""
        bank = self.memory_bank
        bank_sq = (bank * bank).sum(1)
        rows = max(1, int(self.settings.query_chunk_mb * 2**20 // (_BYTES_PER_VALUE * len(bank))))
        distances, indices = [], []
        for chunk in queries.split(rows):
            squared = torch.addmm(bank_sq, chunk, bank.T, alpha=-2)
            squared += (chunk * chunk).sum(1, keepdim=True)
            value, index = squared.min(dim=1)
            distances.append(value.clamp_min(0).sqrt())
            indices.append(index)
        return torch.cat(distances), torch.cat(indices)

    def image_scores(
        self, features: torch.Tensor, patch_scores: torch.Tensor, nearest: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 7 for each image: features (B, P, D), patch scores (B, P), the index (B, P) of
        each patch's nearest bank feature."""
        worst = patch_scores.argmax(dim=1)
        rows = torch.arange(len(worst), device=worst.device)
        best = patch_scores[rows, worst]
        others = min(self.settings.neighbours, self.bank_size) - 1
        if others < 1:
            return best
        anchor = nearest[rows, worst]
        anchors = self.memory_bank[anchor]
        distance = torch.cdist(anchors, self.memory_bank)
        distance[rows, anchor] = float("inf")  # N_b(m*) holds m* itself plus its b - 1 nearest
        neighbours = self.memory_bank[distance.topk(others, dim=1, largest=False).indices]
        return reweighted_scores(features[rows, worst], anchors, neighbours, best)


def _flat(embedding: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B h w, D), patches of an image consecutive in row-major order."""
    return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])
