"""The data check: count every split's images and masks, decode every file, list every problem.

``pagmfr data check`` prints it; ``pagmfr train``, every study cell and the study driver run the
same check before any work starts (:func:`require_clean_data`), so a broken dataset stops a run
before epoch 1 with the full list, not after the last epoch with the first problem.

A *problem* changes what is measured or stops a run (a missing, unreadable or mismatched file,
an incomplete test set, a broken categories file); a *warning* is read correctly but worth a
look (a non-binary, lossy or transparent mask, hidden files skipped); *notes* say how each
category is read (:mod:`pagmfr.data.describe`).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pagmfr.categories import KINDS_FILE, parse_kinds_file
from pagmfr.data.dataset import cached_sample, inspect_sample
from pagmfr.data.describe import category_notes
from pagmfr.data.images import ImageReadError, MaskConvention, as_size, inspect_mask
from pagmfr.data.layout import (
    GOOD,
    ROOT_FILES,
    DatasetError,
    Layout,
    Problem,
    Sample,
    SplitScan,
    category_dir,
    detect_layout,
    layout_of,
    list_categories,
    missing_root,
    scan_split,
)
from pagmfr.data.leakage import Fingerprint, fingerprint, leakage_warnings
from pagmfr.files import require_plain_name
from pagmfr.logs import log

#: Held-out images validation needs (one stays normal, one gets a pseudo-anomaly), and images
#: training needs: the patch memory scores each training image against the *other* ones (a
#: lone image falls back to its own patches: finite, but no longer leave-one-image-out).
MIN_VALIDATION_IMAGES = 2
MIN_FIT_IMAGES = 2
#: The fewest images in train/good that train with validation held out: the check promises
#: no fewer than training needs (:func:`pagmfr.data.pipeline.validation_count`).
MIN_TRAIN_IMAGES = MIN_VALIDATION_IMAGES + MIN_FIT_IMAGES
#: Warnings logged before a run starts; `pagmfr data check` lists them all.
WARNINGS_SHOWN = 10


@dataclass
class SplitSummary:
    """How many images (and masks) each defect type of one split has."""

    category: str
    split: str
    images: dict[str, int]
    masks: dict[str, int]


@dataclass
class CheckReport:
    """Everything the check found: counts per split, every problem and every warning, and
    notes on how each category is read (its layout, kind, masks and validation images)."""

    root: Path
    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found (warnings allowed)."""
        return not self.problems

    def add(self, other: CheckReport | SplitScan) -> None:
        """Take over another report's (or a scan's) problems and warnings, each once."""
        self.problems = list(dict.fromkeys(self.problems + other.problems))
        self.warnings = list(dict.fromkeys(self.warnings + other.warnings))
        self.splits += getattr(other, "splits", [])
        self.notes += getattr(other, "notes", [])

    def format(self, per_defect: bool = True) -> str:
        """The counts (per split, and per defect type unless ``per_defect`` is False),
        warnings and problems as the lines ``pagmfr data check`` prints."""
        lines = [f"data root: {self.root}"]
        for summary in self.splits:
            total = sum(summary.images.values())
            lines.append(f"  {summary.category:<14} {summary.split:<10} {total:>5} images")
            for defect, count in summary.images.items() if per_defect else ():
                masks = "" if defect == GOOD else f", {summary.masks.get(defect, 0)} masks"
                lines.append(f"    {defect:<24} {count:>5} images{masks}")
        lines.extend(f"  {note}" for note in self.notes)
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s) (read as described):")
            lines.extend(f"  - {w}" for w in self.warnings)
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  - {p}" for p in self.problems)
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def check_dataset(
    root: str | Path,
    categories: list[str] | None = None,
    image_size: int | None = None,
    workers: int | None = None,
) -> CheckReport:
    """Scan and decode every image and mask of every split under ``root``; never stops at the
    first problem.

    Args:
        root: a folder in a layout pagmfr reads (:mod:`pagmfr.data.layout`).
        categories: the categories to check (default: every one under ``root``).
        image_size: also keep every sample at this size in the per-process image cache, so a
            run that checks its data before training decodes each file once, not twice.
        workers: decoding threads (default: :func:`decoding_threads`).
    """
    root = Path(root)
    report = CheckReport(root)
    if not root.is_dir():
        report.problems.append(missing_root(root))
        return report
    if categories is None:
        categories = list_categories(root)
        if not categories:
            report.problems.append(
                Problem(
                    root,
                    "no categories found: no folder here is a category of a layout pagmfr "
                    "reads (<category>/train or /test: MVTec; <object>/Data/Images: VisA; "
                    "<category>/normal: plain folders)",
                )
            )
    _check_kinds_file(root, report)
    size = as_size(image_size) if image_size is not None else None
    with ThreadPoolExecutor(workers or decoding_threads()) as pool:
        for category in categories:
            _check_category(root, category, report, pool, size)
    return report


def decoding_threads() -> int:
    """The CPUs this process may use, at most 16: a Ray trial's share (Ray sets
    ``OMP_NUM_THREADS`` to it), else the machine's."""
    allotted = os.environ.get("OMP_NUM_THREADS", "")
    cpus = int(allotted) if allotted.isdigit() and int(allotted) > 0 else os.cpu_count() or 1
    return min(16, cpus)


def _check_kinds_file(root: Path, report: CheckReport) -> None:
    path = root / KINDS_FILE
    if not path.is_file():
        return
    try:
        declared = parse_kinds_file(path)
    except ValueError as err:
        report.problems.append(Problem(path, str(err)))
        return
    unknown = sorted(set(declared) - set(list_categories(root)))
    if unknown:
        report.warnings.append(
            Problem(
                path,
                f"names {', '.join(map(repr, unknown))}, not a category here; a misspelt "
                "category keeps its default kind",
            )
        )


def _check_category(
    root: Path, category: str, report: CheckReport, pool: ThreadPoolExecutor, size: Size | None
) -> None:
    try:
        folder = category_dir(root, category)
    except DatasetError as err:
        report.problems.extend(err.problems)
        return
    layout = layout_of(detect_layout(folder))
    first_warning = len(report.warnings)
    prints, values, counts = {}, set(), {}
    for split in layout.splits:
        scan = scan_split(root, category, split, layout.name)
        images = Counter(s.defect for s in scan.samples)
        masks = Counter(s.defect for s in scan.samples if s.mask is not None)
        report.splits.append(SplitSummary(category, split, dict(sorted(images.items())), masks))
        counts[split] = len(scan.samples)
        _check_counts(layout, split, scan)
        prints[split], found = _decode(scan, pool, size, layout.masks)
        values |= found
        report.add(scan)
    report.notes += category_notes(folder, layout, sorted(values), counts)
    # First among the category's warnings: a run logs only the first few before it starts.
    report.warnings[first_warning:first_warning] = _leakage(layout, prints)


def _leakage(layout: Layout, prints: dict[str, list[Fingerprint]]) -> list[Problem]:
    """Test images copied into another split: train/good (which the validation hold-out is
    drawn from) or a validation split (MVTec 3D-AD's, MVTec AD 2's); and the images of the
    validation split a layout validates on (MVTec AD 2's) copied from train/good, which
    would choose epochs and settings on training images."""
    test = prints.get("test", [])
    warnings = [
        warning
        for split, reference in prints.items()
        if split != "test"
        for warning in leakage_warnings(reference, test, split)
    ]
    validation = layout.validation_split
    if validation is not None:
        warnings += leakage_warnings(prints["train"], prints[validation], "train", validation)
    return warnings


def _check_counts(layout: Layout, split: str, scan: SplitScan) -> None:
    """Enough images to train on and to validate on; a test split that both image metrics
    can be computed on."""
    labels = Counter(s.label for s in scan.samples)
    count, folder = len(scan.samples), scan.folder
    too_few = _too_few_training(layout, count) if split == "train" and count else None
    if too_few:
        scan.problems.append(Problem(folder, too_few))
    if split == layout.validation_split and 0 < count < MIN_VALIDATION_IMAGES:
        scan.problems.append(
            Problem(
                folder,
                f"only {count} validation image(s); validation needs at least "
                f"{MIN_VALIDATION_IMAGES} (one stays normal, one gets a pseudo-anomaly)",
            )
        )
    if split == "test" and scan.samples:
        for label, missing in ((0, "defect-free"), (1, "defective")):
            if not labels[label]:
                scan.problems.append(
                    Problem(
                        scan.folder_of(label),
                        f"no {missing} test images; image AUROC needs both kinds",
                    )
                )


def _too_few_training(layout: Layout, count: int) -> str | None:
    """Why ``count`` training images are too few, or None. The check sees no config, so it
    reads the layout as the default ``data.validation_images=auto`` does: every image trains
    where the layout has a validation split of its own, else :data:`MIN_VALIDATION_IMAGES`
    are held out. A run that asks for ``from_train`` is refused by
    :func:`pagmfr.data.pipeline.validation_count` instead."""
    if layout.validation_split:
        if count >= MIN_FIT_IMAGES:
            return None
        return (
            f"only {count} training image(s); training needs at least {MIN_FIT_IMAGES} "
            f"(validation uses {layout.validation_split}/{GOOD}: none is held out)"
        )
    if count >= MIN_TRAIN_IMAGES:
        return None
    return (
        f"only {count} training image(s); training holds out a validation "
        f"set of {MIN_VALIDATION_IMAGES} and needs at least {MIN_TRAIN_IMAGES}"
    )


def _decode(
    scan: SplitScan, pool: ThreadPoolExecutor, size: Size | None, masks: MaskConvention
) -> tuple[list[Fingerprint], set[int]]:
    """Decode every sample and every mask of a defect-free image (read as ``masks`` says), in
    threads (decoding releases the GIL); the samples' findings keep the scan's order. Returns
    the fingerprints of the samples that decoded and the grey values their masks hold."""
    empty_masks, prints, values = [], [], set()
    for found in pool.map(lambda s: _inspect(s, size), scan.samples):
        scan.problems += found.problems
        scan.warnings += found.warnings
        values.update(found.mask_values)
        if found.empty is not None:
            empty_masks.append(found.empty)
        if found.fingerprint is not None:
            prints.append(found.fingerprint)
    if empty_masks and all(empty_masks):
        folders = {s.mask.parent for s in scan.samples if s.mask is not None}
        scan.problems.append(
            Problem(
                Path(os.path.commonpath(folders)),
                f"every mask is empty: no defective pixel to score; masks are {masks.description}",
            )
        )
    for problems, warnings in pool.map(lambda p: _inspect_good_mask(p, masks), scan.good_masks):
        scan.problems += problems
        scan.warnings += warnings
    return prints, values


Findings = tuple[list[Problem], list[Problem]]
Size = tuple[int, int]


class _Inspection(NamedTuple):
    """What the check found in one sample."""

    problems: list[Problem]
    warnings: list[Problem]
    empty: bool | None = None  # whether its defect mask is empty (None: it has none)
    fingerprint: Fingerprint | None = None  # None when it did not decode
    mask_values: tuple[int, ...] = ()  # the grey values its mask holds


def _inspect(sample: Sample, size: Size | None) -> _Inspection:
    """One sample's problems, warnings, whether its (defect) mask is empty, and its
    fingerprint."""
    try:
        image, mask, warnings, values = inspect_sample(sample)
    except DatasetError as err:
        return _Inspection(err.problems, [])
    except ImageReadError as err:
        return _Inspection([Problem(err.path, err.reason)], [])
    image_print = fingerprint(sample.image, image)
    warnings += _constant_image(sample.image, image, image_print)
    empty = None
    if sample.mask is not None:
        empty = not mask.any()
        if empty and not any(w.path == sample.mask for w in warnings):
            warnings.append(Problem(sample.mask, "mask is empty: its defective image has none"))
    if size is not None:
        cached_sample(sample, size, decoded=(image, mask))
    return _Inspection([], warnings, empty, image_print, values)


def _constant_image(path: Path, image: np.ndarray, image_print: Fingerprint) -> list[Problem]:
    """A warning for an image whose every pixel is the same colour (a failed export): nothing
    to learn or to find in it. The thumbnail rules out almost every image without a pass over
    its pixels."""
    if np.ptp(image_print.thumbnail) > 0 or not (image == image[0, 0]).all():
        return []
    colour = tuple(int(v) for v in image[0, 0])
    return [
        Problem(
            path,
            f"constant image: every pixel is {colour}, so there is nothing to learn or to find "
            "in it; check how it was exported",
        )
    ]


def _inspect_good_mask(path: Path, masks: MaskConvention) -> Findings:
    """Masks of defect-free images are not used, but one that marks pixels means a
    mislabelled image."""
    try:
        mask, _ = inspect_mask(path, masks)
    except ImageReadError as err:
        return [], [Problem(err.path, f"{err.reason} (a defect-free image's mask: unused)")]
    if mask.any():
        return [
            Problem(
                path,
                f"mask of a defect-free image marks {int(mask.sum())} defective pixel(s); move "
                "the image to its defect folder or clear the mask",
            )
        ], []
    return [], []


# ---- before work starts ----

_CHECKED: dict[tuple[str, str, str], CheckReport] = {}


def _files_state(root: Path, category: str) -> str:
    """Names, sizes and modification times of a category's files, the categories file and the
    root files a layout reads (VisA's split file): the check is redone when any of them
    changes, and only then."""
    digest = hashlib.blake2b(digest_size=16)
    folder = root / category
    shared = [root / name for name in (KINDS_FILE, *ROOT_FILES)]
    for path in [*shared, *sorted(folder.rglob("*"))]:
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path}\0{stat.st_ino}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def require_clean_data(
    root: str | Path, categories: Iterable[str], image_size: int | None = None
) -> CheckReport:
    """The check a run makes before any work starts: every split of each category, decoded
    (and with ``image_size`` kept in the image cache for the run). Warnings are logged;
    problems raise one :class:`DatasetError` that lists them all. Each category is checked
    once per process and state of its files, so a study's cells do not check it again."""
    root = Path(root)
    report = CheckReport(root)
    for category in categories:
        require_plain_name(category, "category")  # before any path is built from it
        key = (str(root.resolve()), category, _files_state(root, category))
        if key not in _CHECKED:
            checked = check_dataset(root, [category], image_size)
            for warning in checked.warnings[:WARNINGS_SHOWN]:
                log(f"data warning: {warning}")
            if len(checked.warnings) > WARNINGS_SHOWN:
                more = len(checked.warnings) - WARNINGS_SHOWN
                log(f"data warning: ... and {more} more (`pagmfr data check {root}` lists them)")
            _CHECKED[key] = checked
        report.add(_CHECKED[key])
    if report.problems:
        raise DatasetError(report.problems)
    return report
