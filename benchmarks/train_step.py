"""Training and inference throughput (images/s) at 256 px, batch 32, with and without the data
pipeline, on CUDA when present (AMP, channels_last) and on the CPU otherwise.

"with pipeline" loads the embedded dataset through the real loader (pseudo-anomalies made in
the workers); "without" feeds tensors already on the device. Their ratio shows whether the
loader keeps up. Run as is: ``python benchmarks/train_step.py [--steps N] [--workers N]``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader

from pagmfr.config import Config
from pagmfr.engine import prepare_training, resolve_device
from pagmfr.engine.runtime import autocast, to_device
from pagmfr.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_rate(model, optimizer, batches, device, amp, channels_last, steps: int) -> float:
    """Images/s over ``steps`` optimiser steps, after two warm-up steps."""
    model.train()
    iterator = iter(batches)
    count, start = 0, None
    for step in range(steps + 2):
        if step == 2:
            _sync(device)
            start, count = time.perf_counter(), 0
        batch = to_device(next(iterator), device, channels_last)
        with autocast(device, amp):
            loss, _ = model.training_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        count += batch["image"].shape[0]
    _sync(device)
    return count / (time.perf_counter() - start)


@torch.no_grad()
def _inference_rate(model, batch, device, amp, steps: int) -> float:
    model.eval()
    for _ in range(2):
        with autocast(device, amp):
            model.predict(batch)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        with autocast(device, amp):
            model.predict(batch)
    _sync(device)
    return steps * batch.shape[0] / (time.perf_counter() - start)


def _repeat(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, help="timed steps (default: 30 on CUDA, 3 on CPU)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    steps = args.steps or (30 if device.type == "cuda" else 3)
    cuda = device.type == "cuda"
    config = Config().with_overrides(
        {
            "backbone.weights": "none",
            "backbone.name": args.backbone,
            "data.image_size": args.image_size,
            "train.batch_size": args.batch_size,
            "data.num_workers": args.workers,
            "train.device": str(device),
        }
    )
    model = build_model(config).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    name = (
        torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"{name}; {args.backbone}, {args.image_size} px, batch {args.batch_size}, AMP and "
        f"channels_last {'on' if cuda else 'off'}, {steps} timed steps"
    )

    shape = (args.batch_size, 3, args.image_size, args.image_size)
    resident = {
        "image": torch.rand(shape),
        "pseudo": torch.rand(shape),
        "mask": (torch.rand(shape[0], 1, *shape[2:]) > 0.98).float(),
    }
    resident = to_device(resident, device, cuda)
    without = _train_rate(model, optimizer, _repeat([resident]), device, cuda, cuda, steps)

    train_set = prepare_training(config).train_set
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=cuda,
        persistent_workers=args.workers > 0,
    )
    with_pipeline = _train_rate(model, optimizer, _repeat(loader), device, cuda, cuda, steps)
    inference = _inference_rate(model, resident["pseudo"], device, cuda, steps)

    print(f"training, data on device      {without:9.1f} images/s")
    print(
        f"training, with data pipeline  {with_pipeline:9.1f} images/s  "
        f"({with_pipeline / without:.2f}x of on-device; "
        f"{args.workers} loader workers)"
    )
    print(f"inference                     {inference:9.1f} images/s")


if __name__ == "__main__":
    main()
