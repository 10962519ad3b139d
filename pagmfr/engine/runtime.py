"""The run's machinery that does not depend on the method: device, seeds, mixed precision,
learning-rate schedules and memory figures."""

from __future__ import annotations

import random
import resource
from typing import Any

import numpy as np
import torch

from pagmfr.config import Config


def resolve_device(spec: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; an unavailable CUDA is refused by name."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {spec!r} but CUDA is not available; use auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    """Python, numpy and torch: the same seed on the CPU gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool) -> Any:
    """bfloat16 (or float16) autocast on CUDA; a no-op context on the CPU."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """Loss scaling only where it is needed: float16 autocast (bfloat16 needs none)."""
    needed = device.type == "cuda" and amp and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=needed)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: Config
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule in force (``config.scheduler``: the method's own when ``auto``)."""
    train = config.train
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.epochs)
    if config.scheduler == "warmup_linear":
        warmup = min(train.warmup_epochs, train.epochs - 1)

        def factor(epoch: int) -> float:  # linear warm-up to the base rate, then linear decay
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            return max(0.0, (train.epochs - epoch) / max(train.epochs - warmup, 1))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory this epoch on CUDA (how many trials fit on one GPU), else peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def to_device(
    batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool
) -> dict[str, torch.Tensor]:
    """Tensors moved to ``device``; image batches in channels-last layout when asked."""
    moved = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if channels_last and value.ndim == 4 and value.shape[1] == 3:
            value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved
