"""Settings as dataclasses addressed by dotted keys: the machinery every section shares.

A leaf module (it imports nothing from pagmfr), so the config, the registry and every method
can describe their knobs with it without importing each other. A settings dataclass maps its
fields to flat keys: ``<section>.<field>`` by default, a field's own ``key`` when it declares
one (:func:`setting`), and ``<field>.<sub>`` for each field of a nested settings dataclass, so a
method's settings can keep keys that users already write (``fusion.mode``, ``loss.focal``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

Check = tuple[str, bool, str]  # (field, holds, what it must satisfy)
Path = tuple[str, ...]  # attribute path from a settings object to one value


def stages_check(name: str, layers: tuple[int, ...]) -> Check:
    """Backbone stages (at strides 4, 8, 16, 32): a non-empty increasing subset of 1-4."""
    layers = list(layers)
    increasing = bool(layers) and set(layers) <= {1, 2, 3, 4} and layers == sorted(set(layers))
    return name, increasing, "must be increasing stages from 1-4, e.g. 1,2,3"


def setting(default: Any, *, key: str) -> Any:
    """A field whose flat key is ``key`` rather than ``<section>.<field>``: a method can own a
    key in a section whose name it shares (``loss.image_mse``)."""
    return dataclasses.field(default=default, metadata={"key": key})


@dataclass(frozen=True)
class SettingKey:
    """Where one flat key lives in its settings dataclass, and what it holds."""

    path: Path
    hint: Any
    default: Any


def _is_nested(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


@cache
def keys_of(cls: type, section: str) -> dict[str, SettingKey]:
    """Every flat key of the settings dataclass ``cls`` whose own section is ``section``, in
    field order."""
    hints = typing.get_type_hints(cls)
    keys: dict[str, SettingKey] = {}
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        hint = hints[f.name]
        if _is_nested(hint):
            for key, inner in keys_of(hint, f.name).items():
                keys[key] = SettingKey((f.name, *inner.path), inner.hint, inner.default)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        keys[f.metadata.get("key", f"{section}.{f.name}")] = SettingKey((f.name,), hint, default)
    return keys


def value_at(settings: Any, path: Path) -> Any:
    """The value at ``path`` in a settings object."""
    for name in path:
        settings = getattr(settings, name)
    return settings


def build(cls: type, values: dict[Path, Any]) -> Any:
    """A settings object of ``cls`` from values by path (missing ones keep their defaults)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if _is_nested(hints[f.name]):
            inner = {path[1:]: v for path, v in values.items() if path[0] == f.name}
            kwargs[f.name] = build(hints[f.name], inner)
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return cls(**kwargs)


def failed_checks(settings: Any, path: Path = ()) -> list[tuple[Path, str]]:
    """Each failed ``checks()`` entry of a settings object and its nested settings, as the
    failing field's path and its requirement."""
    failed = [
        ((*path, name), requirement)
        for name, holds, requirement in getattr(settings, "checks", list)()
        if not holds
    ]
    for f in dataclasses.fields(settings):
        inner = getattr(settings, f.name)
        if dataclasses.is_dataclass(inner) and not isinstance(inner, type):
            failed += failed_checks(inner, (*path, f.name))
    return failed
