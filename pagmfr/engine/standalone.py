"""``train``: fit, then evaluate the selected checkpoint on the test split; what
``pagmfr train`` runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pagmfr.config import Config
from pagmfr.engine.fit import Callback, fit, progress_callback
from pagmfr.engine.inference import evaluate, write_metrics


def train(
    config: Config,
    out_dir: str | Path,
    callbacks: Sequence[Callback] = (progress_callback,),
    resume: bool = True,
    full_resolution: bool = False,
) -> dict[str, Any]:
    """Fit, then test the selected checkpoint: ``<out>/metrics.json`` with timings and the
    per-epoch history."""
    result = fit(config, out_dir, callbacks, resume)
    metrics = evaluate(
        result.best_checkpoint,
        out_dir=out_dir,
        full_resolution=full_resolution,
        device=config.train.device,
    )
    epoch_seconds = [h["epoch_seconds"] for h in result.history]
    metrics["timings"] = {
        "train_seconds": result.train_seconds,
        "epochs": len(result.history),
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        "inference_seconds": metrics["inference_seconds"],
    }
    metrics["history"] = result.history
    write_metrics(out_dir, metrics)
    return metrics
