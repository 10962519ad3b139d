"""Helpers shared by the benchmarks: best-of timing and one-core pinning."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def one_core() -> None:
    """Pin numerical libraries and OpenCV to one thread, so figures are per core."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import cv2

    cv2.setNumThreads(1)


def best_time(function: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """The fastest of ``repeats`` runs (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result
