"""Atomic file writes: a process killed mid-write (a lost node, a killed driver) leaves the
previous file intact, never a truncated one that every later reader trips over."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(partial_path)``, then rename the partial file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomically(path, lambda partial: partial.write_text(text))


def copy_atomically(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` onto ``target`` atomically (e.g. a checkpoint from another folder)."""
    return write_atomically(target, lambda partial: shutil.copy2(source, partial))
