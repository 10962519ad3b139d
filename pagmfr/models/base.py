"""The method contract: everything the engine may ask of an anomaly-detection method.

The engine (fit, evaluate, predict) talks to a method only through :class:`AnomalyMethod`, so
a new method is one file: a subclass plus its registration (:func:`pagmfr.registry.register_model`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from pagmfr.models.feature_cache import FeatureCache

#: Anomaly maps (B, 1, H, W) at input resolution, and image scores (B,): higher is more
#: anomalous. Maps need not lie in [0, 1]; metrics only rank them.
Prediction = tuple[torch.Tensor, torch.Tensor]


class AnomalyMethod(nn.Module):
    """Base class of every method: a plain ``nn.Module`` (no device handling, downloads or file
    I/O; weights come from the registry's weights spec or a checkpoint) that provides

    - :meth:`training_loss` for one training batch (unless the method is training-free);
    - :meth:`predict`: anomaly maps and image scores for images in [0, 1];
    - :meth:`prepare`: an optional fit on clean training images before training (memory
      banks, prompt banks); its result must live in buffers, so checkpoints hold it;
    - :meth:`calibrate`: an optional refit on clean training images before each validation
      (statistics of the maps that the current weights make), in buffers too;
    - :meth:`parameter_groups` and :meth:`configure_optimizer` (Adam by default).

    Class attributes tell the engine how to treat the method, before it is built. The registry
    builds a registered class with its ``from_config(config)`` classmethod when it has one
    (the built-in methods: their constructors take their own typed settings), else with
    ``cls(config)``; :meth:`check_config` holds the method's rules across config sections.
    """

    #: The schedule that ``train.scheduler=auto`` resolves to, as the method's authors train.
    default_scheduler: ClassVar[str] = "cosine"
    #: Whether training batches must carry pseudo-anomalies (``pseudo`` and ``mask``).
    uses_pseudo_anomalies: ClassVar[bool] = False
    #: False for training-free methods: fit runs :meth:`prepare`, validates once and stops.
    trains: ClassVar[bool] = True
    #: What the frozen backbone computed for the unaltered training images, given by the
    #: engine to a training run (``train.feature_cache_mb``); None: compute everything.
    feature_cache: FeatureCache | None = None

    @staticmethod
    def check_config(config: Any) -> None:
        """Raise ValueError, naming the key, where a config's sections contradict this method's
        settings (e.g. stages the backbone does not have). Default: no such rules."""

    def training_loss(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and its named parts (for the per-epoch record). ``batch``
        holds ``image`` (B, 3, H, W) in [0, 1] and, for methods that use pseudo-anomalies,
        ``pseudo`` and ``mask`` (B, 1, H, W)."""
        raise NotImplementedError(f"{type(self).__name__} has no training loss")

    def predict(self, images: torch.Tensor) -> Prediction:
        """Anomaly maps (B, 1, H, W) and image scores (B,) for images (B, 3, H, W) in [0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict")

    def prepare(self, clean_batches: Iterable[torch.Tensor]) -> None:
        """Fit what comes from the clean training images, once, before the first epoch. The
        batches are on the CPU; move them to the model's device. Default: nothing to fit."""

    def cache_training_features(self, clean_batches: Iterable[torch.Tensor]) -> None:
        """Encode the clean training images (in training-set order) into
        :attr:`feature_cache`, batch by batch as :meth:`prepare` does. The engine calls it,
        without gradients, when a run resumes: its cached features are then the uninterrupted
        run's, bit for bit. Default: nothing to cache."""

    def calibrate(self, clean_batches: Iterable[torch.Tensor]) -> None:
        """Refit what depends on the trained weights (e.g. map statistics) on the clean
        training images, with the weights as they are now. The engine calls it in eval mode,
        without gradients, after :meth:`prepare` (before the first epoch) and before every
        validation (so the maps validated, tested and checkpointed are normalised by the
        weights that made them). The batches are in training-set order, as for
        :meth:`prepare`. Default: nothing."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """What the optimiser updates: every parameter that requires a gradient."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """Adam over :meth:`parameter_groups`; override for another optimiser."""
        return torch.optim.Adam(self.parameter_groups(), lr=lr, weight_decay=weight_decay)
