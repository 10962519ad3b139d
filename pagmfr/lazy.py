"""Package attributes that load on first use, so importing a light part of a package (its
settings, its presets) does not import what the rest of it needs (torch, Ray, OpenCV)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: a name in ``table`` (name -> the module that
    defines it) is imported from its module when first asked for. ``pagmfr.code_scope`` reads
    the table (named ``_LAZY``) to follow these names as imports."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
