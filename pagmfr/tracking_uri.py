"""Where MLflow records live by default: a leaf module, so that option parsing (the study
scripts' ``--help`` and ``--tracking-uri``, ``pagmfr report`` and ``pagmfr study status``) reads
it without loading pandas, SciPy and the report that ``pagmfr.report.load`` belongs to."""

from __future__ import annotations

import os


def default_tracking_uri() -> str:
    """Where MLflow records are read and written when a command (a study, ``pagmfr report``)
    is given no ``--tracking-uri``: ``$MLFLOW_TRACKING_URI``, as MLflow itself reads it, else
    ``mlflow.db`` in the current folder."""
    return os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
