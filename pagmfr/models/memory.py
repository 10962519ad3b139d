"""A patch memory of normal features: PatchCore-style locally aware patch features of the
(clean) training images, and the nearest-neighbour distance of new patches to them.

Every entry remembers which training image it came from, so a training image can be scored
against the *other* training images only (leave-one-image-out): at test time normal images
are unseen, and a training image's own patches would make its distances 0 everywhere, which
is not what the model will meet at test time. When the memory holds no other image's entries
(a coreset that kept one image's patches only, or a single training image, which the data
check no longer allows), the image is matched with its own entries: small
distances, but finite ones, where excluding every entry would make them infinite and the loss
NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pagmfr.models.common import upsample_to
from pagmfr.models.coreset import bounded_coreset

#: Patch features are projected to this many dimensions for the coreset's distances only.
_PROJECTION_DIM = 128


def local_patch_features(
    stages: list[torch.Tensor], patch_size: int = 3, embedding_dim: int | None = None
) -> torch.Tensor:
    """Locally aware patch features (B, D, h, w) at the first stage's resolution: each stage
    averaged over a ``patch_size`` neighbourhood (zero-padded) at its own resolution, deeper
    stages then upsampled bilinearly, concatenated, and optionally pooled to ``embedding_dim``
    channels."""
    size = stages[0].shape[-2:]
    pad = patch_size // 2
    pooled = [
        upsample_to(F.avg_pool2d(s.float(), patch_size, 1, pad, count_include_pad=True), size)
        for s in stages
    ]
    if embedding_dim is None:
        return torch.cat(pooled, dim=1)
    batch, _, height, width = pooled[0].shape
    per_stage = [
        F.adaptive_avg_pool1d(p.permute(0, 2, 3, 1).reshape(-1, 1, p.shape[1]), embedding_dim)
        for p in pooled
    ]
    joint = F.adaptive_avg_pool1d(torch.cat(per_stage, dim=2), embedding_dim)
    return joint.reshape(batch, height, width, embedding_dim).permute(0, 3, 1, 2)


class PatchMemory(nn.Module):
    """Patch features of normal images (``bank``, float32) and the training-set position of
    the image each came from (``owner``). Buffers are sized when filled or loaded."""

    def __init__(self):
        super().__init__()
        self.register_buffer("bank", torch.zeros(0))
        self.register_buffer("owner", torch.zeros(0, dtype=torch.long))

    @property
    def size(self) -> int:
        return int(self.bank.shape[0])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("bank", "owner"):
            if prefix + name in state_dict:  # adopt the saved memory's size before copying
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fill(
        self, patches: torch.Tensor, owner: torch.Tensor, fraction: float, seed: int, max_mb: float
    ) -> None:
        """``patches`` (N, C), ``owner`` (N,): keep all, or a greedy coreset of ``fraction``
        of them, and at most ``max_mb`` of float32 entries (every training step compares its
        patches with the whole memory, so the bound keeps steps affordable at 256 px)."""
        keep = bounded_coreset(
            patches, fraction, max_mb, seed, _PROJECTION_DIM, "anomaly.knn_max_bank_mb"
        )
        self.bank = patches[keep].contiguous()
        self.owner = owner[keep].contiguous()

    @torch.no_grad()
    def distances(self, patches: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Nearest-neighbour (Euclidean) distance of every patch of ``patches`` (B, C, h, w) to
        the memory: (B, 1, h, w). ``exclude`` (B,): each sample's own training-set position,
        whose entries it may not match unless the memory holds nothing else (-1 or None: none
        excluded)."""
        if self.size == 0:
            raise RuntimeError("the patch memory is empty: call model.prepare(training images)")
        b, c, h, w = patches.shape
        queries = patches.float().permute(0, 2, 3, 1).reshape(b, h * w, c)
        bank_sq = self.bank.pow(2).sum(1)
        out = []
        # float32 even under mixed precision: |q|^2 + |m|^2 - 2 q.m cancels, and bfloat16's
        # rounding would swamp the small distances that matter
        with torch.autocast(patches.device.type, enabled=False):
            for i in range(b):  # one image at a time: (hw, M) distances fit in memory
                q = queries[i]
                d2 = q.pow(2).sum(1, keepdim=True) + bank_sq - 2 * q @ self.bank.T
                if exclude is not None and int(exclude[i]) >= 0:
                    own = self.owner == exclude[i]
                    d2 = d2.masked_fill(own & ~own.all(), math.inf)  # all own: keep them
                out.append(d2.amin(dim=1).clamp_min(0).sqrt())
        return torch.stack(out).view(b, 1, h, w)
