"""The run's machinery that does not depend on the method: device, seeds, mixed precision,
learning-rate schedules and memory figures."""

from __future__ import annotations

import os
import random
import resource
from typing import Any

import numpy as np
import torch

from pagmfr.config import Config
from pagmfr.logs import log

#: The cuBLAS workspace setting PyTorch documents for deterministic matrix products on CUDA.
CUBLAS_WORKSPACE = ":4096:8"

#: The device types pagmfr runs on, and the specs :func:`resolve_device` accepts in words.
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N: a GPU index) or mps"


def resolve_device(spec: str, key: str = "train.device") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; a spec torch cannot parse, or a device
    this machine does not have, is refused naming ``key`` (torch's own error names neither)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{key} {spec!r} is not a device; use {DEVICE_FORMS}") from err
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"{key} {spec!r} is not a device pagmfr runs on; use {DEVICE_FORMS}")
    missing = _unavailable(device)
    if missing:
        raise ValueError(f"{key} is {spec!r} but {missing}; use auto or cpu")
    return device


def _unavailable(device: torch.device) -> str | None:
    """Why this machine cannot run on ``device`` (None: it can)."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            return "CUDA is not available"
        if device.index is not None and device.index >= count:
            return f"this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1})"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "MPS (Apple GPU) is not available"
    return None


def seed_everything(seed: int) -> None:
    """Python, numpy and torch: the same seed on the CPU gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool) -> None:
    """Apply ``train.deterministic`` to this process, on or off: a process that runs several
    runs (a reused Ray worker) follows each run's config, not the first one's. Called before
    the run touches CUDA, so the cuBLAS setting comes before cuBLAS reads it."""
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False  # autotuning picks kernels by their timing
        _choose_cublas_workspace()


def _choose_cublas_workspace() -> None:
    """``CUBLAS_WORKSPACE_CONFIG``, unless already chosen; it must come before cuBLAS starts,
    which a process that has already initialised CUDA may have done (it then says so)."""
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        return
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    if torch.cuda.is_initialized():
        log(
            "WARNING: train.deterministic is on but this process initialised CUDA before "
            "CUBLAS_WORKSPACE_CONFIG was set, so cuBLAS may not be deterministic: set "
            f"CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} in the environment before starting"
        )


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
