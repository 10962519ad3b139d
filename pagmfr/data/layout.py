"""The MVTec AD and MVTec 3D-AD (RGB part) folder layouts: find the samples, report problems.

Scanning only looks at names, never decodes: the dataset uses it to fail fast on a broken
layout, and ``pagmfr data check`` adds the decoding checks on top of it. A *problem* stops a
run (missing, extra or mismatched files change what is measured); a *warning* is read
correctly but worth a look (hidden files skipped, folders ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pagmfr.data.images import IMAGE_SUFFIXES, is_hidden, list_images
from pagmfr.files import require_plain_name

GOOD = "good"
MVTEC_AD = "mvtec_ad"
MVTEC_3D = "mvtec_3d"
LAYOUTS = (MVTEC_AD, MVTEC_3D)
SPLITS = {MVTEC_AD: ("train", "test"), MVTEC_3D: ("train", "validation", "test")}

EXPECTED_LAYOUT = (
    "expected the MVTec AD layout <root>/<category>/train/good/*.png, "
    "<root>/<category>/test/<good|defect>/*.png and "
    "<root>/<category>/ground_truth/<defect>/<name>_mask.png"
)


@dataclass(frozen=True)
class Sample:
    """One image of a split; ``mask`` is None for defect-free images."""

    image: Path
    mask: Path | None
    label: int
    defect: str


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
    """One split's samples, the problems that stop a run, warnings, and the masks found for
    defect-free images (unused, but a non-empty one means a mislabelled image)."""

    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    good_masks: list[Path] = field(default_factory=list)


def list_categories(root: str | Path) -> list[str]:
    """Folders under ``root`` that look like categories (they hold a train or test folder)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if not is_hidden(d) and ((d / "train").is_dir() or (d / "test").is_dir())
    )


def missing_root(root: Path) -> Problem:
    """A data root that does not exist, and what one looks like."""
    return Problem(
        root,
        "data root not found; " + EXPECTED_LAYOUT + " "
        "(`pagmfr data synth DIR` writes a small dataset in this layout)",
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


def detect_layout(folder: Path) -> str:
    """MVTec 3D-AD keeps RGB images in an ``rgb`` sub-folder of each defect folder."""
    return MVTEC_3D if (folder / "train" / GOOD / "rgb").is_dir() else MVTEC_AD


def _note_hidden(folder: Path, scan: SplitScan) -> None:
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


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    """A folder's mask files by name without suffix; ``.png`` wins over other suffixes."""
    rank = {suffix: i for i, suffix in enumerate(IMAGE_SUFFIXES)}
    masks: dict[str, Path] = {}
    for path in sorted(list_images(folder), key=lambda p: rank[p.suffix.lower()]):
        masks.setdefault(path.stem, path)
    return masks


def _folders(category: Path, split_dir: Path, defect: str, layout: str) -> tuple[Path, Path, str]:
    """Where a defect type's images and masks are, and how a mask is named after its image."""
    if layout == MVTEC_AD:
        return split_dir / defect, category / "ground_truth" / defect, "{}_mask"
    return split_dir / defect / "rgb", split_dir / defect / "gt", "{}"


def scan_split(root: str | Path, category: str, split: str, layout: str = "auto") -> SplitScan:
    """All samples of one split and every layout problem found: missing masks, masks without
    an image, empty folders; hidden files are skipped with a warning."""
    folder = category_dir(root, category)
    layout = detect_layout(folder) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected auto, {', '.join(LAYOUTS)}")
    if split not in SPLITS[layout]:
        raise ValueError(
            f"unknown split {split!r} for {layout}; expected {', '.join(SPLITS[layout])}"
        )
    scan = SplitScan()
    split_dir = folder / split
    if not split_dir.is_dir():
        scan.problems.append(Problem(split_dir, f"missing {split} folder; " + EXPECTED_LAYOUT))
        return scan
    _note_hidden(split_dir, scan)
    defects = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not is_hidden(d))
    if split == "train":
        ignored = [d for d in defects if d != GOOD]
        if ignored:
            scan.warnings.append(
                Problem(split_dir, f"ignored {', '.join(ignored)}: training reads train/good only")
            )
        defects = [GOOD]
    for defect in defects:
        _scan_defect(folder, split_dir, defect, layout, scan)
    if layout == MVTEC_AD and split == "test":
        _note_masks_without_images(folder / "ground_truth", defects, scan)
    if not scan.samples and split != "train":
        scan.problems.append(
            Problem(split_dir, f"no images in the {split} split; " + EXPECTED_LAYOUT)
        )
    return scan


def _scan_defect(category: Path, split_dir: Path, defect: str, layout: str, scan: SplitScan):
    """One defect type's images, their masks, and masks without an image."""
    training = split_dir.name == "train"
    image_dir, mask_dir, mask_name = _folders(category, split_dir, defect, layout)
    _note_hidden(image_dir, scan)
    images = list_images(image_dir)
    if not images:
        if training:
            message = "no training images; expected defect-free *.png here"
        else:
            message = (
                "empty folder: no images; restore them or remove the folder "
                "(a partial copy changes every test metric)"
            )
        scan.problems.append(Problem(image_dir, message))
    if training:
        scan.samples += [Sample(image, None, 0, GOOD) for image in images]
        return
    _note_hidden(mask_dir, scan)
    masks = _masks_by_stem(mask_dir)
    for image in images:
        mask = masks.pop(mask_name.format(image.stem), None)
        if defect == GOOD:
            scan.samples.append(Sample(image, None, 0, GOOD))
            if mask is not None:
                scan.good_masks.append(mask)
            continue
        if mask is None:
            expected = mask_dir / (mask_name.format(image.stem) + ".png")
            scan.problems.append(
                Problem(image, f"defective test image has no mask; expected {expected}")
            )
        scan.samples.append(Sample(image, mask, 1, defect))
    suffix = mask_name.format("")
    for stem, mask in sorted(masks.items()):
        if suffix and not stem.endswith(suffix):
            message = f"mask is not named after an image (<image name>{suffix}.png)"
        else:
            expected = image_dir / (stem.removesuffix(suffix) + ".png")
            message = (
                f"mask has no image; expected {expected} (a missing image changes the test set)"
            )
        scan.problems.append(Problem(mask, message))


def _note_masks_without_images(ground_truth: Path, defects: list[str], scan: SplitScan) -> None:
    """MVTec AD keeps masks apart from images: a mask folder of a defect type with no images."""
    if not ground_truth.is_dir():
        return
    for folder in sorted(ground_truth.iterdir()):
        if folder.is_dir() and not is_hidden(folder) and folder.name not in defects:
            count = len(list_images(folder))
            scan.problems.append(
                Problem(
                    folder,
                    f"{count} mask(s) of defect type {folder.name!r}, but the test split has no "
                    f"{folder.name} folder; restore its images or remove the masks",
                )
            )
