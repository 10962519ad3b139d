"""How a category is read, in the lines ``pagmfr data check`` prints under its counts: the
layout found, the kind (which picks the pseudo-anomalies), the mask values found and how
they are read, and which images validation uses. What is assumed is said before any run."""

from __future__ import annotations

from pathlib import Path

from pagmfr.categories import KINDS_FILE, builtin_kind, known_dataset, read_kinds_file
from pagmfr.data.samples import GOOD, Layout

#: Mask values listed one by one up to this many; more are summarised as a range.
VALUES_LISTED = 6


def category_notes(
    folder: Path, layout: Layout, mask_values: list[int], counts: dict[str, int]
) -> list[str]:
    """The notes on one category folder of ``layout``; ``mask_values`` are the grey values its
    masks hold, ``counts`` its images per split."""
    lines = [
        f"{layout.title} layout, {_kind(folder)}",
        _masks(layout, mask_values),
        _validation(layout, counts),
        *layout.notes(folder),
    ]
    return [f"{folder.name}: {line}" for line in lines]


def _kind(folder: Path) -> str:
    category, root = folder.name, folder.parent
    try:
        declared = read_kinds_file(root)
    except ValueError:  # the check lists the broken file as a problem of its own
        declared = {}
    if category in declared:
        return f"kind {declared[category]} (from {KINDS_FILE})"
    kind, dataset = builtin_kind(category, root), known_dataset(category, root)
    if dataset:
        return f"kind {kind} ({dataset}'s category)"
    return f"kind {kind} (the default; declare another in {root / KINDS_FILE} or data.kind)"


def _masks(layout: Layout, values: list[int]) -> str:
    if not values:
        return f"masks: none read; they are {layout.masks.description}"
    if len(values) <= VALUES_LISTED:
        found = ", ".join(map(str, values))
    else:
        found = f"{len(values)} values from {values[0]} to {values[-1]}"
    return f"masks hold {found}: {layout.masks.description}"


def _validation(layout: Layout, counts: dict[str, int]) -> str:
    split = layout.validation_split
    if split is None:
        return "validation: data.val_fraction of the training images, held out by train.seed"
    return (
        f"validation: the {counts.get(split, 0)} defect-free images of {split}/{GOOD}, held out "
        "by the dataset (data.validation_images=from_train holds out training images instead)"
    )
