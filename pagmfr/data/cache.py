"""A per-process cache of decoded, resized images.

MVTec images are 700-1024 px PNGs; decoding and resizing them every epoch dominates CPU time,
so each file is decoded once per process and size. The budget bounds memory in long-lived
workers; set ``PAGMFR_IMAGE_CACHE_MB=0`` to disable caching.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np


class ArrayCache:
    """Least-recently-used arrays up to a byte budget; thread-safe for DataLoader threads."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, tuple[np.ndarray, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_load(
        self, key: Hashable, load: Callable[[], tuple[np.ndarray, ...]]
    ) -> tuple[np.ndarray, ...]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
        value = load()
        for array in value:
            array.setflags(write=False)  # shared between callers: nobody may edit it in place
        size = sum(a.nbytes for a in value)
        with self._lock:
            self.misses += 1
            if size <= self.budget_bytes and key not in self._entries:
                self._entries[key] = value
                self._bytes += size
                while self._bytes > self.budget_bytes:
                    _, evicted = self._entries.popitem(last=False)
                    self._bytes -= sum(a.nbytes for a in evicted)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


CACHE_VARIABLE = "PAGMFR_IMAGE_CACHE_MB"
DEFAULT_CACHE_MB = 4096.0


def cache_budget_bytes(value: str | None) -> int:
    """The budget that ``$PAGMFR_IMAGE_CACHE_MB`` (``value``; None: unset) asks for, or an
    error naming the variable: read at import, a bare float() error would name nothing."""
    if value is None:
        return int(DEFAULT_CACHE_MB * 2**20)
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = math.nan
    if not (math.isfinite(megabytes) and megabytes >= 0):
        raise ValueError(
            f"{CACHE_VARIABLE}={value!r} is not a size: set it to a non-negative number of MiB "
            f"(default {DEFAULT_CACHE_MB:g}; 0 turns the image cache off) or unset it"
        )
    return int(megabytes * 2**20)


IMAGE_CACHE = ArrayCache(cache_budget_bytes(os.environ.get(CACHE_VARIABLE)))
