"""Plain folders for a line's own images: ``<root>/<category>/normal/`` (defect-free),
``abnormal/`` (defective) and ``mask/`` (one mask per defective image, same file name; or
``<name>_mask``), like anomalib's ``Folder``.

Test images are the defective ones and some defect-free ones: those in ``normal_test/`` when
that folder exists, else every fifth image of ``normal/`` in name order (the 1st, 6th, 11th
...): a fixed set that needs no seed, spread over the line's recording order when the files
are named by time, and the same for every run and seed. Masks hold 0 for normal pixels and
any other value for defects (0/255, 0/1 and class ids read alike). Pixel metrics need a mask
for each defective image, so ``mask/`` is required where ``abnormal/`` has images.
"""

from __future__ import annotations

from pathlib import Path

from pagmfr.data.images import NONZERO_MASKS, is_hidden, list_images
from pagmfr.data.samples import (
    ANOMALY,
    GOOD,
    Layout,
    Problem,
    Sample,
    SplitScan,
    masks_by_stem,
    note_hidden,
)

NORMAL, NORMAL_TEST, ABNORMAL, MASK = "normal", "normal_test", "abnormal", "mask"
#: Without ``normal_test/``, every this-many-th image of ``normal/`` is a test image.
TEST_EVERY = 5
EXPECTED = (
    "expected the folder layout <root>/<category>/normal/* (defect-free), "
    "<root>/<category>/abnormal/* (defective), <root>/<category>/mask/<image name>.png and "
    "optionally <root>/<category>/normal_test/* (defect-free test images)"
)


def recognises(folder: Path) -> bool:
    """A category folder of this layout holds ``normal/`` or ``abnormal/``, and neither
    ``train/`` nor ``test/``: those make it an MVTec category with a stray folder."""
    if (folder / "train").is_dir() or (folder / "test").is_dir():
        return False
    return (folder / NORMAL).is_dir() or (folder / ABNORMAL).is_dir()


def normal_images(category: Path) -> tuple[list[Path], list[Path]]:
    """Defect-free training and test images, split as the module says."""
    images = list_images(category / NORMAL)
    if (category / NORMAL_TEST).is_dir():
        return images, list_images(category / NORMAL_TEST)
    train = [image for index, image in enumerate(images) if index % TEST_EVERY]
    return train, images[::TEST_EVERY]


def scan_folder(category: Path, split: str) -> SplitScan:
    """Training: the defect-free training images. Test: the defect-free test images and every
    defective image with its mask; masks without an image and missing ones are problems."""
    scan = SplitScan(folder=category / (NORMAL if split == "train" else ABNORMAL))
    used = (NORMAL, NORMAL_TEST, ABNORMAL, MASK)
    for folder in used:
        note_hidden(category / folder, scan)
    train, test = normal_images(category)
    if split == "train":
        _ignored_folders(category, used, scan)
        if not train:
            scan.problems.append(
                Problem(category / NORMAL, "no defect-free training images; " + EXPECTED)
            )
        scan.samples += [Sample(image, None, 0, GOOD, NONZERO_MASKS) for image in train]
        return scan
    has_normal_test = (category / NORMAL_TEST).is_dir()
    scan.label_folders[0] = category / (NORMAL_TEST if has_normal_test else NORMAL)
    if has_normal_test and not test:
        scan.problems.append(
            Problem(
                category / NORMAL_TEST,
                "empty folder: add defect-free test images or "
                f"remove it (then every {TEST_EVERY}th image of normal/ is a test image)",
            )
        )
    scan.samples += [Sample(image, None, 0, GOOD, NONZERO_MASKS) for image in test]
    _scan_abnormal(category, scan)
    return scan


def _scan_abnormal(category: Path, scan: SplitScan) -> None:
    """Defective images with their masks (``<name>`` or ``<name>_mask``)."""
    images, mask_dir = list_images(category / ABNORMAL), category / MASK
    if not images:
        scan.problems.append(Problem(category / ABNORMAL, "no defective images; " + EXPECTED))
        return
    if not mask_dir.is_dir():
        scan.problems.append(
            Problem(
                mask_dir,
                "missing mask folder: pixel metrics (pixel AUROC, AU-PRO) need a mask per "
                "defective image; add mask/<image name>.png (0 normal, non-zero defective)",
            )
        )
        return
    masks, stems = masks_by_stem(mask_dir), {image.stem for image in images}
    for image in images:
        found = _masks_of(image, masks, stems)
        if not found:
            scan.problems.append(
                Problem(image, f"defective image has no mask; expected {mask_dir / image.stem}.png")
            )
        elif len(found) > 1:
            scan.problems.append(
                Problem(
                    image,
                    f"two masks for {image.stem}: {found[0].name} and {found[1].name} in "
                    f"{mask_dir}; keep one",
                )
            )
        scan.samples.append(Sample(image, found[0] if found else None, 1, ANOMALY, NONZERO_MASKS))
    for stem, mask in sorted(masks.items()):
        scan.problems.append(
            Problem(mask, f"mask has no image; expected {category / ABNORMAL / stem}.<png|jpg...>")
        )


def _masks_of(image: Path, masks: dict[str, Path], stems: set[str]) -> list[Path]:
    """The masks named after ``image`` (``<name>``, ``<name>_mask``), taken out of ``masks``;
    ``<name>_mask`` is another image's own mask when one of the ``stems`` is that name."""
    names = [image.stem]
    if f"{image.stem}_mask" not in stems:
        names.append(f"{image.stem}_mask")
    return [masks.pop(name) for name in names if name in masks]


def _ignored_folders(category: Path, used: tuple[str, ...], scan: SplitScan) -> None:
    ignored = sorted(
        p.name for p in category.iterdir() if p.is_dir() and not is_hidden(p) and p.name not in used
    )
    if ignored:
        scan.warnings.append(
            Problem(
                category, f"ignored {', '.join(ignored)}: the folder layout reads {', '.join(used)}"
            )
        )


def _notes(category: Path) -> list[str]:
    train, test = normal_images(category)
    if (category / NORMAL_TEST).is_dir():
        return [f"defect-free test images: {NORMAL_TEST}/ ({len(test)})"]
    return [
        f"defect-free test images: every {TEST_EVERY}th of {NORMAL}/ in name order "
        f"({len(test)} of {len(train) + len(test)}; a {NORMAL_TEST}/ folder chooses them instead)"
    ]


FOLDER = Layout(
    name="folder",
    title="plain folders",
    splits=("train", "test"),
    expected=EXPECTED,
    recognises=recognises,
    scan=scan_folder,
    masks=NONZERO_MASKS,
    notes=_notes,
)
