"""Progress and status lines: on stderr, flushed at once, so they interleave correctly with
Ray's and MLflow's output and stay out of a command's stdout results."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """One status line on stderr."""
    print(message, file=sys.stderr, flush=True)
