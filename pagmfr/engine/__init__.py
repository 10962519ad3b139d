"""One training and evaluation loop for every method.

- :mod:`~pagmfr.engine.fit`: ``fit``, the training loop, as a short sequence of named steps;
- :mod:`~pagmfr.engine.inference`: ``infer``, ``evaluate``, ``predict`` and the metrics record;
- :mod:`~pagmfr.engine.standalone`: ``train`` (fit, then evaluate), what ``pagmfr train`` runs;
- :mod:`~pagmfr.engine.checkpoints`, :mod:`~pagmfr.engine.data`, :mod:`~pagmfr.engine.runtime`:
  checkpoints, the data of a run, and device, seeds and schedules.

The engine talks to a method only through :class:`pagmfr.models.AnomalyMethod` and never
imports Ray: a study's trial runs the same ``fit`` with another per-epoch callback.
"""

from pagmfr.engine.checkpoints import (
    checkpoint_path,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from pagmfr.engine.data import TrainingSetup, prepare_training
from pagmfr.engine.fit import (
    Callback,
    EpochReport,
    FitResult,
    NonFiniteLossError,
    TrainingRun,
    fit,
    progress_callback,
    start_fit,
)
from pagmfr.engine.inference import TEST_METRICS, anomaly_metrics, evaluate, infer, predict
from pagmfr.engine.runtime import make_scheduler, resolve_device, seed_everything
from pagmfr.engine.standalone import train

__all__ = [
    "TEST_METRICS",
    "Callback",
    "EpochReport",
    "FitResult",
    "NonFiniteLossError",
    "TrainingRun",
    "TrainingSetup",
    "anomaly_metrics",
    "checkpoint_path",
    "evaluate",
    "fit",
    "infer",
    "load_checkpoint",
    "make_scheduler",
    "model_from_checkpoint",
    "predict",
    "prepare_training",
    "progress_callback",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "start_fit",
    "train",
]
