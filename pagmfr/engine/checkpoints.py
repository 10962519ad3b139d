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
from pagmfr.files import load_tensor_file, write_atomically
from pagmfr.models import AnomalyMethod, build_model

#: What a best checkpoint leaves out: only a resumed run needs it.
RESUME_ONLY = ("optimizer", "scheduler")
#: What every checkpoint holds, and what resuming reads besides.
MODEL_KEYS = ("model", "config")
RESUME_KEYS = (*MODEL_KEYS, *RESUME_ONLY, "epoch", "history", "best")
#: What to do about a checkpoint that cannot be used.
USE_PAGMFR_CHECKPOINT = "use a _best.pt or _last.pt file written by pagmfr train"
START_OVER = "start over with --no-resume (pagmfr train) or delete the file"


def checkpoint_name(config: Config, which: str) -> str:
    """``<method>_<category>_<best|last>.pt``: predictable, per category."""
    return f"{config.method}_{config.data.category}_{which}.pt"


def checkpoint_path(out_dir: str | Path, config: Config, which: str) -> Path:
    """``<out>/checkpoints/<method>_<category>_<which>.pt``."""
    return Path(out_dir) / "checkpoints" / checkpoint_name(config, which)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Save ``state`` atomically: a killed process leaves the previous checkpoint intact."""
    write_atomically(path, lambda partial: torch.save(state, partial))


def load_checkpoint(
    path: str | Path, needs: tuple[str, ...] = MODEL_KEYS, fix: str = USE_PAGMFR_CHECKPOINT
) -> dict[str, Any]:
    """A checkpoint's state, loaded safely (tensors and plain data only); an unreadable file or
    one without the ``needs`` keys fails naming the path and ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = load_tensor_file(path, "checkpoint", fix)
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: not a pagmfr checkpoint (it holds a {type(state).__name__}, not a dict "
            f"of {', '.join(needs)}); {fix}"
        )
    missing = [key for key in needs if key not in state]
    if missing:
        raise ValueError(f"{path}: not a pagmfr checkpoint (no {', '.join(missing)}); {fix}")
    return state


def checkpoint_config(checkpoint: dict[str, Any], source: str | Path = "checkpoint") -> Config:
    """The config a checkpoint was written with; a damaged one fails naming ``source``."""
    try:
        return Config.from_flat(checkpoint["config"])
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{source}: its config is not valid ({err})") from err


def model_from_checkpoint(
    checkpoint: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    source: str | Path = "checkpoint",
) -> tuple[AnomalyMethod, Config]:
    """The checkpoint's method in eval mode, with every weight from the checkpoint; ``source``
    (its path) is named when they do not fit."""
    config = checkpoint_config(checkpoint, source)
    if overrides:
        config = config.with_overrides(overrides)
    model = build_model(config, load_weights=False)
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, AttributeError) as err:
        detail = str(err).strip().splitlines()[0]
        raise ValueError(
            f"{source}: its weights do not fit a {config.method} model ({detail}); "
            f"{USE_PAGMFR_CHECKPOINT} with this version of pagmfr"
        ) from err
    return model.eval(), config


def check_resumable(checkpoint: dict[str, Any], config: Config, path: Path) -> None:
    """Refuse to resume a run written with another config of its method (extending the epochs
    is fine; another method's settings, which a study cell is not keyed on, are too)."""
    # Through the config, so keys added since (a newly registered method) read as defaults.
    saved = checkpoint_config(checkpoint, path).to_flat(own_method_only=True)
    current = config.to_flat(own_method_only=True)
    for key in ("train.epochs", "train.feature_cache_mb"):  # neither changes what was trained
        saved.pop(key, None)
        current.pop(key, None)
    differing = sorted(k for k in current if saved.get(k) != current[k])
    if differing:
        raise ValueError(
            f"{path} was written with a different config ({', '.join(differing[:5])}); "
            "use a new output folder or turn resuming off"
        )
