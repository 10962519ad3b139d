"""The folder layouts pagmfr reads, recognised per category folder: MVTec AD, the RGB part of
MVTec 3D-AD, MVTec AD 2 (:mod:`pagmfr.data.mvtec`), VisA (:mod:`pagmfr.data.visa`) and plain
folders of a line's own images (:mod:`pagmfr.data.folder`).

Every caller goes through :func:`scan_split`, so the dataset, the data check and the
trainer see one list of samples per split whatever the layout; the samples, problems and
warnings are :mod:`pagmfr.data.samples`' (re-exported here).
"""

from __future__ import annotations

from pathlib import Path

from pagmfr.data.folder import FOLDER
from pagmfr.data.images import is_hidden
from pagmfr.data.mvtec import MVTEC_3D as _MVTEC_3D
from pagmfr.data.mvtec import MVTEC_AD as _MVTEC_AD
from pagmfr.data.mvtec import MVTEC_AD2
from pagmfr.data.samples import (
    ANOMALY,
    GOOD,
    DatasetError,
    Layout,
    Problem,
    Sample,
    SplitScan,
)
from pagmfr.data.visa import VISA
from pagmfr.files import require_plain_name

__all__ = [
    "ANOMALY",
    "GOOD",
    "LAYOUTS",
    "DatasetError",
    "Layout",
    "Problem",
    "Sample",
    "SplitScan",
    "category_dir",
    "detect_layout",
    "layout_of",
    "list_categories",
    "scan_split",
]

MVTEC_AD = _MVTEC_AD.name
MVTEC_3D = _MVTEC_3D.name
#: In the order they are tried: the MVTec layouts before plain folders, so an MVTec category
#: that also holds a stray normal/ folder is still read as MVTec (plain folders also require
#: no train/ and no test/); MVTec AD, which any folder with train/ or test/ is, after the
#: other MVTec layouts.
LAYOUTS: dict[str, Layout] = {
    layout.name: layout for layout in (VISA, MVTEC_AD2, _MVTEC_3D, _MVTEC_AD, FOLDER)
}
#: Files under a data root that some layout reads (VisA's split file).
ROOT_FILES = tuple(path for layout in LAYOUTS.values() for path in layout.root_files)

EXPECTED_LAYOUT = _MVTEC_AD.expected


def layout_of(name: str) -> Layout:
    """The layout called ``name``; ValueError listing the known ones."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; expected auto, {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def detect_layout(folder: Path) -> str:
    """The layout of a category folder: the first that recognises it (VisA's Data/Images,
    MVTec AD 2's test_public, MVTec 3D-AD's rgb/, MVTec AD's train/ or test/, plain normal/
    or abnormal/ folders without those), else MVTec AD, whose errors then say what is
    missing."""
    for layout in LAYOUTS.values():
        if layout.recognises(folder):
            return layout.name
    return MVTEC_AD


def list_categories(root: str | Path) -> list[str]:
    """Folders under ``root`` that some layout recognises as a category."""
    root = Path(root)
    if not root.is_dir():
        return []
    layouts = LAYOUTS.values()
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not is_hidden(d) and any(known.recognises(d) for known in layouts)
    )


def missing_root(root: Path) -> Problem:
    """A data root that does not exist, and what one looks like."""
    return Problem(
        root,
        "data root not found; " + EXPECTED_LAYOUT + " "
        "(`pagmfr data synth DIR` writes a small dataset in this layout; VisA, MVTec AD 2 "
        'and plain folders are read too: README, "Datasets")',
    )


def category_dir(root: str | Path, category: str) -> Path:
    """The folder of ``category``, or a DatasetError that lists the categories that exist."""
    require_plain_name(category, "category")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(missing_root(root))
    folder = root / category
    if not folder.is_dir():
        found = ", ".join(list_categories(root)) or "none"
        raise DatasetError(
            Problem(folder, f"category {category!r} not found; categories here: {found}")
        )
    return folder


def scan_split(root: str | Path, category: str, split: str, layout: str = "auto") -> SplitScan:
    """All samples of one split of ``category`` and every layout problem found (missing
    masks, masks without an image, empty folders...); hidden files are skipped with a
    warning. ``layout`` is a name of :data:`LAYOUTS`, or ``auto``: :func:`detect_layout`."""
    folder = category_dir(root, category)
    chosen = layout_of(detect_layout(folder) if layout == "auto" else layout)
    if split not in chosen.splits:
        raise ValueError(
            f"unknown split {split!r} for {chosen.name}; expected {', '.join(chosen.splits)}"
        )
    return chosen.scan(folder, split)


def validation_split(root: str | Path, category: str, requested: str = "auto") -> str | None:
    """The split whose defect-free images validation uses (MVTec AD 2's ``validation``), or
    None: a share of the training images is held out. ``requested`` is
    ``data.validation_images``: ``from_train`` always holds out training images."""
    if requested == "from_train":
        return None
    return layout_of(detect_layout(category_dir(root, category))).validation_split
