"""The seeded pseudo-anomaly generator: ``make_generator(...)`` gives ``gen(image) -> (image,
mask)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pagmfr.anomalies.settings import GeneratorSettings
from pagmfr.anomalies.strategies import StrategyContext, strategy_factory


class PseudoAnomalyGenerator:
    """Applies a strategy to uint8 (H, W, 3) images, leaving a share of them normal.

    Seeded: the same seed gives the same sequence of samples. Data-loader workers must not
    share one stream (each would repeat the others): pass ``rng=gen.sample_rng(epoch, index)``
    for samples that do not depend on which worker draws them. Picklable for spawn-started
    workers: it rebuilds its strategy from its arguments.
    """

    def __init__(
        self,
        strategy: str,
        category_kind: str,
        texture_dir: str | Path | None = None,
        object_dir: str | Path | None = None,
        image_size: int = 256,
        seed: int = 0,
        settings: GeneratorSettings | None = None,
        **knobs: Any,
    ):
        # Knobs given by keyword override those of ``settings`` (e.g. a config's generator).
        base = settings.knobs() if settings is not None else {}
        self.settings = GeneratorSettings.from_knobs(**{**base, **knobs})
        self._args = dict(
            strategy=strategy,
            category_kind=category_kind,
            texture_dir=texture_dir,
            object_dir=object_dir,
            image_size=image_size,
            seed=seed,
            **self.settings.knobs(),
        )
        self.strategy = strategy
        self.seed = seed
        factory = strategy_factory(strategy)
        context = StrategyContext(
            category_kind, image_size, self.settings, seed, texture_dir, object_dir
        )
        self._apply = factory(context)
        self.rng = np.random.default_rng(seed)

    def __reduce__(self):
        return (_rebuild, (self._args, self.rng.bit_generator.state))

    def sample_rng(self, *stream: int) -> np.random.Generator:
        """An independent generator for one sample (e.g. ``epoch, index``) of this seed."""
        return np.random.default_rng([self.seed, *stream])

    def __call__(
        self, image: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if not (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
        ):
            shape = getattr(image, "shape", None)
            dtype = getattr(image, "dtype", type(image).__name__)
            raise ValueError(
                f"expected a uint8 (H, W, 3) RGB image, got {dtype} with shape {shape}"
            )
        rng = self.rng if rng is None else rng
        if rng.random() < self.settings.normal_probability:
            return image.copy(), np.zeros(image.shape[:2], dtype=bool)
        return self._apply(image, rng)


def _rebuild(args: dict, rng_state: dict) -> PseudoAnomalyGenerator:
    generator = PseudoAnomalyGenerator(**args)
    generator.rng.bit_generator.state = rng_state
    return generator


#: Build a seeded generator: ``make_generator(strategy, category_kind, texture_dir=None,
#: object_dir=None, image_size=256, seed=0, settings=None, **knobs)``. Unknown strategies or
#: knobs fail at once, naming the allowed ones, and user folders are read (and checked) here,
#: not in the middle of training.
make_generator = PseudoAnomalyGenerator
