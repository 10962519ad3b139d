"""Checkpoints: where they live, atomic writes, safe loading, and a model rebuilt from one.

``last`` holds everything a resumed run needs (model, optimiser, scheduler, history); ``best``
holds the selected epoch's model and its record, without optimiser state: it is only ever
evaluated. Both load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pagmfr.config import Config
from pagmfr.files import write_atomically
from pagmfr.models import AnomalyMethod, build_model

#: What a best checkpoint leaves out: only a resumed run needs it.
RESUME_ONLY = ("optimizer", "scheduler")


def checkpoint_name(config: Config, which: str) -> str:
    """``<method>_<category>_<best|last>.pt``: predictable, per category."""
    return f"{config.method}_{config.data.category}_{which}.pt"


def checkpoint_path(out_dir: str | Path, config: Config, which: str) -> Path:
    """``<out>/checkpoints/<method>_<category>_<which>.pt``."""
    return Path(out_dir) / "checkpoints" / checkpoint_name(config, which)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Save ``state`` atomically: a killed process leaves the previous checkpoint intact."""
    write_atomically(path, lambda partial: torch.save(state, partial))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's state, loaded safely (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(
    checkpoint: dict[str, Any], overrides: dict[str, Any] | None = None
) -> tuple[AnomalyMethod, Config]:
    """The checkpoint's method in eval mode, with every weight from the checkpoint."""
    config = Config.from_flat(checkpoint["config"])
    if overrides:
        config = config.with_overrides(overrides)
    model = build_model(config, load_weights=False)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config


def check_resumable(checkpoint: dict[str, Any], config: Config, path: Path) -> None:
    """Refuse to resume a run written with another config (extending the epochs is fine)."""
    # Through the config, so keys added since (a newly registered method) read as defaults.
    saved, current = Config.from_flat(checkpoint["config"]).to_flat(), config.to_flat()
    for key in ("train.epochs",):
        saved.pop(key, None)
        current.pop(key, None)
    differing = sorted(k for k in current if saved.get(k) != current[k])
    if differing:
        raise ValueError(
            f"{path} was written with a different config ({', '.join(differing[:5])}); "
            "use a new output folder or turn resuming off"
        )
