"""Losses and the difference maps both methods share (SSIM, CIELAB, cosine, focal).

SSIM and CIELAB come from kornia (maintained, differentiable; its CIELAB matches
scikit-image's rgb2lab, which the tests check); the focal loss is torchvision's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from kornia.metrics import ssim
from torchvision.ops import sigmoid_focal_loss

SSIM_WINDOW = 11


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of two image batches in [0, 1], averaged over channels: (B, 1, H, W)."""
    return ssim(a.float(), b.float(), SSIM_WINDOW).mean(dim=1, keepdim=True)


def lab_difference_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """CIE76 colour difference (Delta E) between two RGB batches in [0, 1]: (B, 1, H, W)."""
    a = rgb_to_lab(a.float().clamp(0, 1))
    b = rgb_to_lab(b.float().clamp(0, 1))
    return torch.linalg.vector_norm(a - b, dim=1, keepdim=True)


def cosine_distance_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity over channels: (B, 1, h, w), in [0, 2]."""
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=1).unsqueeze(1)


def image_reconstruction_losses(
    reconstruction: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE, 1 - mean SSIM) between a reconstruction and its target."""
    mse = F.mse_loss(reconstruction.float(), target.float())
    return mse, 1.0 - ssim_map(reconstruction, target).mean()


def feature_distillation_loss(
    predicted: list[torch.Tensor], target: list[torch.Tensor]
) -> torch.Tensor:
    """Mean over scales of the mean cosine distance: the multi-scale feature loss."""
    return torch.stack(
        [cosine_distance_map(p, t).mean() for p, t in zip(predicted, target, strict=True)]
    ).mean()


def focal_loss(
    logits: torch.Tensor, mask: torch.Tensor, gamma: float, alpha: float
) -> torch.Tensor:
    """torchvision's sigmoid focal loss on logits against a 0/1 mask; ``alpha`` < 0: unweighted."""
    return sigmoid_focal_loss(
        logits.float(), mask.float(), alpha=alpha, gamma=gamma, reduction="mean"
    )
