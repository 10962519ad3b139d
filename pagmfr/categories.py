"""MVTec AD categories and their kind, which decides the pseudo-anomaly strategy.

Custom categories (a user's own data in the MVTec layout) get their kind from the caller, from a
``pagmfr_categories.json`` file in the data root (``{"my_part": "object"}``), or default to object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

TEXTURE = "texture"
OBJECT = "object"
KINDS = (TEXTURE, OBJECT)

#: File in a data root that names the kind of each of its categories.
KINDS_FILE = "pagmfr_categories.json"

MVTEC_AD_CATEGORIES: dict[str, str] = {
    "carpet": TEXTURE,
    "grid": TEXTURE,
    "leather": TEXTURE,
    "tile": TEXTURE,
    "wood": TEXTURE,
    "bottle": OBJECT,
    "cable": OBJECT,
    "capsule": OBJECT,
    "hazelnut": OBJECT,
    "metal_nut": OBJECT,
    "pill": OBJECT,
    "screw": OBJECT,
    "toothbrush": OBJECT,
    "transistor": OBJECT,
    "zipper": OBJECT,
}

TEXTURE_CATEGORIES = tuple(c for c, k in MVTEC_AD_CATEGORIES.items() if k == TEXTURE)
OBJECT_CATEGORIES = tuple(c for c, k in MVTEC_AD_CATEGORIES.items() if k == OBJECT)


def validate_kind(kind: str) -> str:
    """Return ``kind`` if it is a known kind, else raise naming the allowed ones."""
    if kind not in KINDS:
        raise ValueError(f"unknown category kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def parse_kinds_file(path: Path) -> dict[str, str]:
    """The kinds a categories file declares; ValueError saying what is wrong with it."""
    try:
        declared = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read category kinds ({err})") from err
    if not isinstance(declared, dict):
        raise ValueError('expected a JSON object like {"my_part": "object"}')
    for category, kind in declared.items():
        try:
            validate_kind(kind)
        except ValueError as err:
            raise ValueError(f"category {category!r}: {err}") from err
    return declared


def read_kinds_file(root: str | Path) -> dict[str, str]:
    """Kinds declared in ``<root>/pagmfr_categories.json``; empty when the file is absent."""
    path = Path(root) / KINDS_FILE
    if not path.is_file():
        return {}
    try:
        return parse_kinds_file(path)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def category_kind(
    category: str,
    root: str | Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """The kind of ``category``: caller's override, then the data root's kinds file, then
    MVTec AD's own split, then ``object``."""
    if overrides and category in overrides:
        return validate_kind(overrides[category])
    if root is not None:
        declared = read_kinds_file(root)
        if category in declared:
            return declared[category]
    return MVTEC_AD_CATEGORIES.get(category, OBJECT)
