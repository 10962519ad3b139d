"""A patch memory of normal features: PatchCore-style locally aware patch features of the
(clean) training images, and the nearest-neighbour distance of new patches to them.

Every entry remembers which training image it came from, so a training image can be scored
against the *other* training images only (leave-one-image-out): at test time normal images
are unseen, and a training image's own patches would make its distances 0 everywhere, which
is not what the model will meet at test time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pagmfr.models.common import upsample_to


def patch_features(features: list[torch.Tensor]) -> torch.Tensor:
    """PatchCore's aggregation: 3x3 average pooling of each scale, every scale resized to the
    finest one's size, concatenated: (B, C, h, w)."""
    size = features[0].shape[-2:]
    return torch.cat(
        [upsample_to(F.avg_pool2d(f.float(), 3, 1, 1), size) for f in features], dim=1
    )


def greedy_coreset(points: torch.Tensor, count: int, seed: int, dim: int = 128) -> torch.Tensor:
    """Indices of ``count`` points chosen by greedy k-centre on a random projection to ``dim``
    dimensions (PatchCore's approximate coreset)."""
    if count >= points.shape[0]:
        return torch.arange(points.shape[0])
    g = torch.Generator().manual_seed(seed)
    projected = points @ (torch.randn(points.shape[1], dim, generator=g) / math.sqrt(dim))
    chosen = [int(torch.randint(points.shape[0], (1,), generator=g))]
    distance = (projected - projected[chosen[0]]).pow(2).sum(1)
    for _ in range(count - 1):
        nxt = int(distance.argmax())
        chosen.append(nxt)
        distance = torch.minimum(distance, (projected - projected[nxt]).pow(2).sum(1))
    return torch.tensor(sorted(chosen))


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
    def fill(self, patches: torch.Tensor, owner: torch.Tensor, fraction: float, seed: int):
        """``patches`` (N, C), ``owner`` (N,): keep all, or a greedy coreset of ``fraction``."""
        keep = greedy_coreset(patches, max(1, round(fraction * patches.shape[0])), seed)
        self.bank = patches[keep].contiguous()
        self.owner = owner[keep].contiguous()

    @torch.no_grad()
    def distances(self, patches: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Nearest-neighbour (Euclidean) distance of every patch of ``patches`` (B, C, h, w) to
        the memory: (B, 1, h, w). ``exclude`` (B,): each sample's own training-set position,
        whose entries it may not match (-1 or None: none excluded)."""
        if self.size == 0:
            raise RuntimeError("the patch memory is empty: call model.prepare(training images)")
        b, c, h, w = patches.shape
        queries = patches.float().permute(0, 2, 3, 1).reshape(b, h * w, c)
        bank_sq = self.bank.pow(2).sum(1)
        out = []
        for i in range(b):  # one image at a time: (hw, M) distances fit in memory at any size
            q = queries[i]
            d2 = q.pow(2).sum(1, keepdim=True) + bank_sq - 2 * q @ self.bank.T
            if exclude is not None and int(exclude[i]) >= 0:
                d2 = d2.masked_fill(self.owner == exclude[i], math.inf)
            out.append(d2.amin(dim=1).clamp_min(0).sqrt())
        return torch.stack(out).view(b, 1, h, w)
