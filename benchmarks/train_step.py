"""Training and inference throughput (images/s), and what PAGMFR's normal-feature evidence costs.

Defaults: 256 px, batch 32, the embedded dataset's brick, on CUDA when present (AMP,
channels_last) and on the CPU otherwise. Every model's patch memory is gathered from the
category's real training images first, as a fit does, so the evidence is timed against a
memory of the size training meets.

- "evidence": training steps with data on the device, without the normal-feature evidence
  (``anomaly.knn=false``), with it (the default 10% coreset) and with every training patch
  kept (``anomaly.knn_coreset=1``); the evidence's share of a step is ``1 - off / on`` in time.
- "with pipeline" loads the samples through the real loader (pseudo-anomalies made in the
  workers); its ratio to on-device data shows whether the loader keeps up.

  python benchmarks/train_step.py [--steps N] [--workers N]
  python benchmarks/train_step.py --data ../shared/data/mvtec_ad_256 --category transistor \\
      --image-size 128 --batch-size 16 --workers 0
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


def _prepared(config: Config, setup, device: torch.device):
    """The model of ``config``, prepared and calibrated as a fit starts, and its optimiser."""
    torch.manual_seed(0)
    model = build_model(config).to(device)
    model.prepare(setup.clean_batches(config.train.batch_size))
    model.eval()
    with torch.no_grad():  # the map statistics, as a fit's first epoch starts with them
        model.calibrate(setup.clean_batches(config.train.batch_size))
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model, optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--category", default="brick")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, help="timed steps (default: 30 on CUDA, 3 on CPU)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a state dict")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    steps = args.steps or (30 if device.type == "cuda" else 3)
    cuda = device.type == "cuda"
    config = Config().with_overrides(
        {
            "data.root": args.data,
            "data.category": args.category,
            "backbone.weights": args.weights,
            "backbone.name": args.backbone,
            "data.image_size": args.image_size,
            "train.batch_size": args.batch_size,
            "data.num_workers": args.workers,
            "train.device": str(device),
        }
    )
    if cuda:
        torch.backends.cudnn.benchmark = True
    name = (
        torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    )
    setup = prepare_training(config)
    print(
        f"{name}; {args.backbone}, {args.category} at {args.image_size} px "
        f"({len(setup.train_set)} training images), batch {args.batch_size}, AMP and "
        f"channels_last {'on' if cuda else 'off'}, {steps} timed steps"
    )
    loader = DataLoader(
        setup.train_set,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(setup.train_set) > args.batch_size,
        num_workers=args.workers,
        pin_memory=cuda,
        persistent_workers=args.workers > 0,
    )
    resident = to_device(next(iter(loader)), device, cuda)

    rates, memories = {}, {}
    variants = {
        "without evidence": {"anomaly.knn": False},
        "with evidence (default)": {},
        "with evidence, every patch kept": {"anomaly.knn_coreset": 1.0},
    }
    for label, overrides in variants.items():
        model, optimizer = _prepared(config.with_overrides(overrides), setup, device)
        memories[label] = model.memory.size if model.memory is not None else 0
        rates[label] = _train_rate(model, optimizer, _repeat([resident]), device, cuda, cuda, steps)
    model, optimizer = _prepared(config, setup, device)
    with_pipeline = _train_rate(model, optimizer, _repeat(loader), device, cuda, cuda, steps)
    inference = _inference_rate(model, resident["pseudo"], device, cuda, steps)

    base = rates["without evidence"]
    for label, rate in rates.items():
        share = "" if rate == base else f"  evidence {1 - rate / base:5.1%} of a step"
        memory = f"{memories[label]:>7} patches in memory" if memories[label] else " " * 25
        print(f"training, {label:<32} {rate:8.1f} images/s  {memory}{share}")
    default = rates["with evidence (default)"]
    print(
        f"training, with data pipeline           {with_pipeline:8.1f} images/s  "
        f"({with_pipeline / default:.2f}x of on-device; {args.workers} loader workers)"
    )
    print(f"inference                               {inference:8.1f} images/s")


if __name__ == "__main__":
    main()
