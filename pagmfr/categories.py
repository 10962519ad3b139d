"""The categories of MVTec AD, VisA and MVTec AD 2 and their kind, which decides the
pseudo-anomaly strategy: textures get anomalies anywhere in the frame, objects on the object.

Custom categories (a user's own data in any layout) get their kind from the caller, from a
``pagmfr_categories.json`` file in the data root (``{"my_part": "object"}``), or default to object.
A dataset's own kinds apply in that dataset's layout only: a plain-folder line named ``fabric``
is an object unless declared.
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

#: VisA: every category is one or a few objects on a plain background.
VISA_CATEGORIES: dict[str, str] = dict.fromkeys(
    (
        "candle",
        "capsules",
        "cashew",
        "chewinggum",
        "fryum",
        "macaroni1",
        "macaroni2",
        "pcb1",
        "pcb2",
        "pcb3",
        "pcb4",
        "pipe_fryum",
    ),
    OBJECT,
)

#: MVTec AD 2. Rice and walnuts are bulk goods that fill the frame, with no single object to
#: aim at, so they are textures here, like fabric: their defects can be anywhere, which is
#: where texture pseudo-anomalies go (objects get theirs near the centre, on the object).
#: A kinds file or ``data.kind`` overrides this.
MVTEC_AD2_CATEGORIES: dict[str, str] = {
    "fabric": TEXTURE,
    "rice": TEXTURE,
    "walnuts": TEXTURE,
    "can": OBJECT,
    "fruit_jelly": OBJECT,
    "sheet_metal": OBJECT,
    "vial": OBJECT,
    "wallplugs": OBJECT,
}

#: Each known dataset's categories, by the dataset's name (no category name is in two).
KNOWN_CATEGORIES: dict[str, dict[str, str]] = {
    "MVTec AD": MVTEC_AD_CATEGORIES,
    "VisA": VISA_CATEGORIES,
    "MVTec AD 2": MVTEC_AD2_CATEGORIES,
}


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
    its dataset's (:func:`builtin_kind`)."""
    if overrides and category in overrides:
        return validate_kind(overrides[category])
    if root is not None:
        declared = read_kinds_file(root)
        if category in declared:
            return declared[category]
    return builtin_kind(category, root)


def builtin_kind(category: str, root: str | Path | None = None) -> str:
    """The kind its dataset gives ``category`` (:func:`known_dataset`), else ``object``."""
    dataset = known_dataset(category, root)
    return KNOWN_CATEGORIES[dataset][category] if dataset else OBJECT


def known_dataset(category: str, root: str | Path | None = None) -> str | None:
    """The known dataset ``category`` belongs to ("VisA"), or None for a custom one. Under a
    data root that holds the category, only the dataset of its layout counts (MVTec AD's
    list for MVTec AD and 3D-AD, none for plain folders); without one (a report of past runs
    whose data is elsewhere), any."""
    folder = Path(root, category) if root is not None else None
    if folder is None or not folder.is_dir():
        return next((name for name, kinds in KNOWN_CATEGORIES.items() if category in kinds), None)
    # Imported here: pagmfr.data imports this module.
    from pagmfr.data.layout import detect_layout, layout_of

    dataset = layout_of(detect_layout(folder)).categories
    return dataset if dataset and category in KNOWN_CATEGORIES[dataset] else None
