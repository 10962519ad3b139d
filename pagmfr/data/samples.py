"""What every folder layout yields: samples, the problems and warnings found while scanning,
and the :class:`Layout` record that says how one layout is recognised and read.

Scanning only looks at names, never decodes: the dataset uses it to fail fast on a broken
layout, and ``pagmfr data check`` adds the decoding checks on top of it. A *problem* stops a
run (missing, extra or mismatched files change what is measured); a *warning* is read
correctly but worth a look (hidden files skipped, folders ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pagmfr.data.images import (
    IMAGE_SUFFIXES,
    MVTEC_MASKS,
    MaskConvention,
    is_hidden,
    list_images,
)

#: The defect type of defect-free images, in every layout.
GOOD = "good"
#: The defect type of a layout that names none (VisA, plain folders): one for all defects.
ANOMALY = "anomaly"


@dataclass(frozen=True)
class Sample:
    """One image of a split; ``mask`` is None for defect-free images, and is read as
    ``masks`` says (each dataset defines its own mask values)."""

    image: Path
    mask: Path | None
    label: int
    defect: str
    masks: MaskConvention = MVTEC_MASKS


@dataclass(frozen=True)
class Problem:
    """Something wrong with a file or folder, phrased so the user knows what to fix."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; carries every problem found (and pickles with
    them, so a study's records show them)."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        lines = [str(p) for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"... and {len(self.problems) - 20} more (run `pagmfr data check`)")
        return "\n".join(lines)


@dataclass
class SplitScan:
    """One split's samples, the problems that stop a run, warnings, the masks found for
    defect-free images (unused, but a non-empty one means a mislabelled image), and the
    folder (or file) that defines the split, which count problems name."""

    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    good_masks: list[Path] = field(default_factory=list)
    folder: Path | None = None
    #: Where the images of a label (0 defect-free, 1 defective) are when a split keeps them
    #: apart (plain folders' normal/ and abnormal/): "no defect-free images" names that one.
    label_folders: dict[int, Path] = field(default_factory=dict)

    def folder_of(self, label: int) -> Path | None:
        """The folder (or file) where images of ``label`` belong."""
        return self.label_folders.get(label, self.folder)


@dataclass(frozen=True)
class Layout:
    """One folder layout: how a category folder of it is recognised, its splits, how its
    masks are read, and the scanner that lists a split's samples."""

    name: str
    #: The dataset's name in messages ("MVTec AD 2").
    title: str
    splits: tuple[str, ...]
    #: The layout in words, for errors: "expected the ... layout <root>/...".
    expected: str
    recognises: Callable[[Path], bool]
    #: ``scan(category_folder, split)``; the split is one of ``splits``.
    scan: Callable[[Path, str], SplitScan]
    masks: MaskConvention = MVTEC_MASKS
    #: The split of held-out defect-free images validation uses by default (MVTec AD 2's
    #: ``validation/good``); None: a share of the training images is held out.
    validation_split: str | None = None
    #: Files under the data root (not the category folder) that the layout reads.
    root_files: tuple[str, ...] = ()
    #: ``notes(category_folder)``: what the data check says about how the category is read.
    notes: Callable[[Path], list[str]] = lambda folder: []
    #: The dataset whose category names give their kind in this layout (a key of
    #: :data:`pagmfr.categories.KNOWN_CATEGORIES`); None: no built-in kinds (plain folders,
    #: where a line named "fabric" is not MVTec AD 2's fabric).
    categories: str | None = None


def note_hidden(folder: Path, scan: SplitScan) -> None:
    """Hidden images and folders (macOS ``._000.png``) are skipped, with a note."""
    if not folder.is_dir():
        return
    hidden = sorted(
        p.name
        for p in folder.iterdir()
        if is_hidden(p) and (p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES)
    )
    if hidden:
        scan.warnings.append(
            Problem(
                folder,
                f"skipped {len(hidden)} hidden file(s) or folder(s) such as {hidden[0]} "
                "(dot-files, e.g. macOS metadata, are not data)",
            )
        )


def masks_by_stem(folder: Path) -> dict[str, Path]:
    """A folder's mask files by name without suffix; ``.png`` wins over other suffixes."""
    rank = {suffix: i for i, suffix in enumerate(IMAGE_SUFFIXES)}
    masks: dict[str, Path] = {}
    for path in sorted(list_images(folder), key=lambda p: rank[p.suffix.lower()]):
        masks.setdefault(path.stem, path)
    return masks
