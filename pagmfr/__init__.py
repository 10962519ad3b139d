"""pagmfr: PAGMFR and RGPKD anomaly detection with reproducible ablation studies."""

__version__ = "0.1.0"
