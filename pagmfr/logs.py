"""Progress and status lines: on stderr, flushed at once, so they interleave correctly with
Ray's and MLflow's output and stay out of a command's stdout results."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def log(message: str) -> None:
    """One status line on stderr."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables set for a block and restored after it: how Ray Tune's and
    MLflow's own progress output is turned off for one call (both read it at call time)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
