"""The MVTec family: MVTec AD, the RGB part of MVTec 3D-AD, and MVTec AD 2.

All three keep a split's images in one folder per defect type (``good`` for defect-free ones)
and each defective image's mask, named after it, in a folder of the same defect type; they
differ in where those folders are. MVTec AD 2 adds a held-out ``validation/good`` that
validation uses (:attr:`~pagmfr.data.samples.Layout.validation_split`), and test sets without
ground truth (``test_private``, ``test_private_mixed``) that only ``pagmfr predict`` scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pagmfr.data.images import is_hidden, list_images
from pagmfr.data.samples import (
    GOOD,
    Layout,
    Problem,
    Sample,
    SplitScan,
    masks_by_stem,
    note_hidden,
)

GROUND_TRUTH = "ground_truth"
#: MVTec AD 2's test sets without ground truth: never trained or tested on.
PRIVATE_TESTS = ("test_private", "test_private_mixed")


@dataclass(frozen=True)
class _Folders:
    """Where one MVTec layout keeps its splits, images and masks."""

    expected: str
    #: split -> its folder under the category (default: the split's name).
    renamed: tuple[tuple[str, str], ...] = ()
    #: Splits of defect-free images only: ``good/`` is read, other folders are ignored.
    normal_only: tuple[str, ...] = ("train",)
    #: Where ``ground_truth/<defect>`` is: beside the splits ("category"), inside the test
    #: split ("split"), or None: masks in ``gt/`` beside each defect's ``rgb/`` (3D-AD).
    ground_truth: str | None = "category"

    def split_dir(self, category: Path, split: str) -> Path:
        return category / dict(self.renamed).get(split, split)

    def truth_dir(self, category: Path, split_dir: Path) -> Path | None:
        if self.ground_truth is None:
            return None
        return (category if self.ground_truth == "category" else split_dir) / GROUND_TRUTH

    def defect_dirs(self, category: Path, split_dir: Path, defect: str) -> tuple[Path, Path, str]:
        """Where a defect type's images and masks are, and how a mask is named after its
        image."""
        truth = self.truth_dir(category, split_dir)
        if truth is None:
            return split_dir / defect / "rgb", split_dir / defect / "gt", "{}"
        return split_dir / defect, truth / defect, "{}_mask"


_AD = _Folders(
    "expected the MVTec AD layout <root>/<category>/train/good/*.png, "
    "<root>/<category>/test/<good|defect>/*.png and "
    "<root>/<category>/ground_truth/<defect>/<name>_mask.png"
)
_3D = _Folders(
    "expected the MVTec 3D-AD layout <root>/<category>/<train|validation|test>/<good|defect>/"
    "rgb/*.png with the masks in gt/*.png beside rgb/",
    ground_truth=None,
)
_AD2 = _Folders(
    "expected the MVTec AD 2 layout <root>/<category>/train/good/*.png, validation/good/*.png, "
    "test_public/<good|bad>/*.png and test_public/ground_truth/bad/<name>_mask.png",
    renamed=(("test", "test_public"),),
    normal_only=("train", "validation"),
    ground_truth="split",
)


def scan_mvtec(folders: _Folders, category: Path, split: str) -> SplitScan:
    """All samples of one split and every layout problem found: missing masks, masks without
    an image, empty folders; hidden files are skipped with a warning."""
    split_dir = folders.split_dir(category, split)
    normal_only = split in folders.normal_only
    scan = SplitScan(folder=split_dir / GOOD if normal_only else split_dir)
    if not split_dir.is_dir():
        scan.problems.append(Problem(split_dir, f"missing {split} folder; " + folders.expected))
        return scan
    note_hidden(split_dir, scan)
    truth = folders.truth_dir(category, split_dir)
    defects = sorted(
        d.name
        for d in split_dir.iterdir()
        if d.is_dir() and not is_hidden(d) and (truth is None or d != truth)
    )
    if normal_only:
        ignored = [d for d in defects if d != GOOD]
        if ignored:
            reader = "training" if split == "train" else split
            scan.warnings.append(
                Problem(
                    split_dir,
                    f"ignored {', '.join(ignored)}: {reader} reads {split_dir.name}/good only",
                )
            )
        defects = [GOOD]
    for defect in defects:
        _scan_defect(folders, category, split_dir, defect, normal_only, scan)
    if not normal_only and truth is not None:
        _note_masks_without_images(truth, defects, scan)
    if not scan.samples and not normal_only:
        scan.problems.append(
            Problem(split_dir, f"no images in the {split} split; " + folders.expected)
        )
    return scan


def _scan_defect(
    folders: _Folders,
    category: Path,
    split_dir: Path,
    defect: str,
    normal_only: bool,
    scan: SplitScan,
) -> None:
    """One defect type's images, their masks, and masks without an image."""
    image_dir, mask_dir, mask_name = folders.defect_dirs(category, split_dir, defect)
    note_hidden(image_dir, scan)
    images = list_images(image_dir)
    if not images:
        if split_dir.name == "train":
            message = "no training images; expected defect-free *.png here"
        elif normal_only:
            message = f"no {split_dir.name} images; expected defect-free *.png here"
        else:
            message = (
                "empty folder: no images; restore them or remove the folder "
                "(a partial copy changes every test metric)"
            )
        scan.problems.append(Problem(image_dir, message))
    if normal_only:
        scan.samples += [Sample(image, None, 0, GOOD) for image in images]
        return
    note_hidden(mask_dir, scan)
    masks = masks_by_stem(mask_dir)
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
    """Masks kept apart from images: a mask folder of a defect type with no images."""
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


def _private_tests(category: Path) -> list[str]:
    """MVTec AD 2's test sets without ground truth, named so nobody expects them scored."""
    found = [name for name in PRIVATE_TESTS if (category / name).is_dir()]
    if not found:
        return []
    return [
        f"{', '.join(found)}: no ground truth, so neither trained nor tested on "
        "(`pagmfr predict` scores their images)"
    ]


MVTEC_AD = Layout(
    name="mvtec_ad",
    title="MVTec AD",
    splits=("train", "test"),
    expected=_AD.expected,
    recognises=lambda folder: (folder / "train").is_dir() or (folder / "test").is_dir(),
    scan=partial(scan_mvtec, _AD),
    categories="MVTec AD",
)
MVTEC_3D = Layout(
    name="mvtec_3d",
    title="MVTec 3D-AD (RGB)",
    splits=("train", "validation", "test"),
    expected=_3D.expected,
    recognises=lambda folder: (folder / "train" / GOOD / "rgb").is_dir(),
    scan=partial(scan_mvtec, _3D),
    categories="MVTec AD",
)
MVTEC_AD2 = Layout(
    name="mvtec_ad2",
    title="MVTec AD 2",
    splits=("train", "validation", "test"),
    expected=_AD2.expected,
    recognises=lambda folder: any(
        (folder / name).is_dir() for name in ("test_public", *PRIVATE_TESTS)
    ),
    scan=partial(scan_mvtec, _AD2),
    validation_split="validation",
    notes=_private_tests,
    categories="MVTec AD 2",
)
