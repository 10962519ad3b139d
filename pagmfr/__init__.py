"""pagmfr: PAGMFR and RGPKD anomaly detection with reproducible ablation studies."""

__version__ = "0.1.0"

_LAZY = {
    "Config": "pagmfr.config",
    "train": "pagmfr.engine",
    "fit": "pagmfr.engine",
    "evaluate": "pagmfr.engine",
    "predict": "pagmfr.engine",
    "PAGMFR": "pagmfr.models",
    "build_model": "pagmfr.models",
}


def __getattr__(name: str):
    """``pagmfr.train``, ``pagmfr.PAGMFR`` ...: imported on first use, so ``import pagmfr`` and
    the CLI's light commands do not pay for torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pagmfr' has no attribute {name!r}")


__all__ = ["PAGMFR", "Config", "__version__", "build_model", "evaluate", "fit", "predict", "train"]
