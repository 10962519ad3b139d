"""VisA: images in ``<root>/<object>/Data/Images/{Normal,Anomaly}``, masks in
``Data/Masks/Anomaly``, and the split in one file, ``<root>/split_csv/1cls.csv``.

The csv, not the folders, says which images are training and which are test images (with
the header ``object,split,label,image,mask`` and paths relative to the root), so a VisA root
without it is refused, naming it. VisA names no defect type: its defective images are all
``anomaly``. Its masks are 0 for normal pixels and non-zero (1, or a class id) for defects,
and are read so (:data:`~pagmfr.data.images.NONZERO_MASKS`).
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from pagmfr.data.images import NONZERO_MASKS, list_images
from pagmfr.data.samples import ANOMALY, GOOD, Layout, Problem, Sample, SplitScan

#: The split file, relative to the data root.
CSV = "split_csv/1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}
SPLITS = ("train", "test")
EXPECTED = (
    "expected the VisA layout <root>/split_csv/1cls.csv (object,split,label,image,mask), "
    "<root>/<object>/Data/Images/{Normal,Anomaly}/*.JPG and <root>/<object>/Data/Masks/Anomaly/"
    "*.png"
)


def recognises(folder: Path) -> bool:
    """A VisA object folder holds ``Data/Images``."""
    return (folder / "Data" / "Images").is_dir()


def read_rows(root: Path) -> tuple[list[tuple[int, dict[str, str]]], list[Problem]]:
    """The csv's rows (its columns, stripped; missing cells empty) with their line numbers, or
    the problem that makes it unusable."""
    path = root / CSV
    if not path.is_file():
        return [], [
            Problem(
                path,
                "VisA's split file is missing: it says which images are training and which "
                "are test images; restore split_csv/1cls.csv from the VisA download "
                f"(the Data/ folders alone do not say it); {EXPECTED}",
            )
        ]
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            header = tuple(reader.fieldnames or ())
            rows = [
                (line, {column: (row.get(column) or "").strip() for column in COLUMNS})
                for line, row in enumerate(reader, start=2)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return [], [Problem(path, f"cannot read the split file ({err})")]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return [], [
            Problem(
                path,
                f"header {','.join(header) or '(empty)'} lacks {', '.join(missing)}; "
                f"expected {','.join(COLUMNS)}",
            )
        ]
    return rows, []


def scan_visa(category: Path, split: str) -> SplitScan:
    """The samples the csv lists for ``category`` and ``split``, each image and mask checked
    to exist inside the root, and each image to be listed once; defective training rows are
    ignored with a warning (training reads normal images only), and images no row lists are
    named once."""
    root, csv_path = category.parent, category.parent / CSV
    scan = SplitScan(folder=csv_path)
    rows, scan.problems = read_rows(root)
    if scan.problems:
        return scan
    mine = [(line, row) for line, row in rows if row["object"] == category.name]
    if not mine:
        objects = sorted({row["object"] for _, row in rows})
        scan.problems.append(
            Problem(
                csv_path,
                f"no rows for object {category.name!r}; objects listed: "
                f"{', '.join(objects) or 'none'}",
            )
        )
        return scan
    scan.problems += _listed_twice(mine, csv_path) + _masks_that_are_images(rows, mine, csv_path)
    ignored = 0
    for line, row in mine:
        where = f"{CSV} line {line}"
        if row["split"] not in SPLITS or row["label"] not in LABELS:
            scan.problems.append(
                Problem(
                    csv_path,
                    f"line {line}: split {row['split']!r}, label {row['label']!r}; expected "
                    f"split train or test and label normal or anomaly",
                )
            )
        elif row["split"] == split and split == "train" and LABELS[row["label"]]:
            ignored += 1
        elif row["split"] == split:
            _add_row(root, row, where, scan)
    if ignored:
        scan.warnings.append(
            Problem(
                csv_path,
                f"ignored {ignored} anomaly row(s) of {category.name}'s train split: "
                "training reads normal images only",
            )
        )
    if not scan.samples and not scan.problems:
        scan.problems.append(
            Problem(
                csv_path,
                f"no {split} rows for object {category.name!r}: its {split} split is empty "
                f"(every image must be listed with split train or test); restore {CSV} from "
                "the VisA download or add the rows",
            )
        )
    _note_unlisted(category, root, mine, scan)
    return scan


def _listed_twice(rows: list[tuple[int, dict[str, str]]], csv_path: Path) -> list[Problem]:
    """Images that more than one row lists, naming both lines: in one split the image counts
    twice; in both, a test image is trained on (and a defect-free row's empty mask could
    stand for a defective row's)."""
    first: dict[PurePosixPath, int] = {}
    problems = []
    for line, row in rows:
        if not row["image"]:
            continue
        image = PurePosixPath(row["image"])
        if image in first:
            problems.append(
                Problem(
                    csv_path,
                    f"lines {first[image]} and {line} both list {row['image']}: an image "
                    "belongs in one row (twice in one split it counts twice; in train and test "
                    "it is a test image trained on); remove one",
                )
            )
        else:
            first[image] = line
    return problems


def _masks_that_are_images(
    rows: list[tuple[int, dict[str, str]]],
    mine: list[tuple[int, dict[str, str]]],
    csv_path: Path,
) -> list[Problem]:
    """Rows of ``mine`` whose mask column names a file that a row (of any object) lists as
    an image: a photograph read as a mask marks defects where there are none (pixel AUROC
    fell from 0.63 to 0.39 with one such row, under a mere lossy-mask warning)."""
    images = {PurePosixPath(row["image"]): line for line, row in rows if row["image"]}
    problems = []
    for line, row in mine:
        owner = images.get(PurePosixPath(row["mask"])) if row["mask"] else None
        if owner is not None:
            problems.append(
                Problem(
                    csv_path,
                    f"line {line}: its mask {row['mask']} is the image of line {owner}; a mask "
                    "is its own file (Data/Masks/...): fix the row's mask column",
                )
            )
    return problems


def _add_row(root: Path, row: dict[str, str], where: str, scan: SplitScan) -> None:
    """One csv row as a sample, its image and mask checked to exist."""
    image = _listed_path(root, row["image"], where, scan)
    mask = _listed_path(root, row["mask"], where, scan) if row["mask"] else None
    if image is None:
        return
    label = LABELS[row["label"]]
    if label and not row["mask"]:
        scan.problems.append(Problem(image, f"anomalous image has no mask in {where}"))
    if not label:
        if mask is not None:
            scan.good_masks.append(mask)
        mask = None
    scan.samples.append(Sample(image, mask, label, ANOMALY if label else GOOD, NONZERO_MASKS))


def _listed_path(root: Path, listed: str, where: str, scan: SplitScan) -> Path | None:
    """A path the csv lists, relative to the root and inside it (links followed), that
    exists; else a problem naming it and None."""
    relative = PurePosixPath(listed)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        scan.problems.append(
            Problem(root / CSV, f"{where}: {listed!r} is not a path inside the data root")
        )
        return None
    path = root.joinpath(*relative.parts)
    if not path.resolve().is_relative_to(root.resolve()):
        scan.problems.append(
            Problem(
                path,
                f"listed in {where}, but a link leads it to {path.resolve()}, outside the data "
                "root; copy the file into the root",
            )
        )
        return None
    if not path.is_file():
        scan.problems.append(
            Problem(path, f"listed in {where} but missing; restore it or fix the row")
        )
        return None
    return path


def _note_unlisted(
    category: Path, root: Path, rows: list[tuple[int, dict[str, str]]], scan: SplitScan
) -> None:
    """Images under ``Data/Images`` that no row lists: not used, worth a look."""
    listed = {root.joinpath(*PurePosixPath(row["image"]).parts) for _, row in rows}
    images = category / "Data" / "Images"
    unlisted = [
        image
        for folder in sorted(p for p in images.iterdir() if p.is_dir())
        for image in list_images(folder)
        if image not in listed
    ]
    if unlisted:
        scan.warnings.append(
            Problem(
                images,
                f"{len(unlisted)} image(s) such as {unlisted[0].name} are in no row of {CSV}: "
                "not used",
            )
        )


def _notes(category: Path) -> list[str]:
    return [f"split and labels from {category.parent / CSV}; defect type: {ANOMALY}"]


VISA = Layout(
    name="visa",
    title="VisA",
    splits=SPLITS,
    expected=EXPECTED,
    recognises=recognises,
    scan=scan_visa,
    masks=NONZERO_MASKS,
    root_files=(CSV,),
    notes=_notes,
    categories="VisA",
)
