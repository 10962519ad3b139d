"""The MVTec AD and MVTec 3D-AD (RGB part) folder layouts: find the samples, report problems.

Scanning only looks at names, never decodes: the dataset uses it to fail fast on a broken
layout, and ``pagmfr data check`` adds the decoding checks on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pagmfr.data.images import IMAGE_SUFFIXES, list_images

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
    """A dataset that cannot be used as it is; carries every problem found."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        lines = [str(p) for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"... and {len(self.problems) - 20} more (run `pagmfr data check`)")
        super().__init__("\n".join(lines))


def list_categories(root: str | Path) -> list[str]:
    """Folders under ``root`` that look like categories (they hold a train or test folder)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / "train").is_dir() or (d / "test").is_dir())


def category_dir(root: str | Path, category: str) -> Path:
    """The folder of ``category``, or a DatasetError that lists the categories that exist."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            Problem(
                root,
                "data root not found; " + EXPECTED_LAYOUT + " "
                "(`pagmfr data synth DIR` writes a small dataset in this layout)",
            )
        )
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


def _find_mask(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def scan_split(
    root: str | Path, category: str, split: str, layout: str = "auto"
) -> tuple[list[Sample], list[Problem]]:
    """All samples of one split and every layout problem found (missing masks, empty folders)."""
    folder = category_dir(root, category)
    layout = detect_layout(folder) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected auto, {', '.join(LAYOUTS)}")
    if split not in SPLITS[layout]:
        raise ValueError(
            f"unknown split {split!r} for {layout}; expected {', '.join(SPLITS[layout])}"
        )
    split_dir = folder / split
    if not split_dir.is_dir():
        return [], [Problem(split_dir, f"missing {split} folder; " + EXPECTED_LAYOUT)]

    samples: list[Sample] = []
    problems: list[Problem] = []
    defects = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if split == "train" and GOOD not in defects:
        defects = [GOOD, *defects]
    for defect in defects:
        if split == "train" and defect != GOOD:
            continue
        if layout == MVTEC_AD:
            images = list_images(split_dir / defect)
            mask_dir = folder / "ground_truth" / defect
            mask_name = "{}_mask"
        else:
            images = list_images(split_dir / defect / "rgb")
            mask_dir = split_dir / defect / "gt"
            mask_name = "{}"
        if split == "train" and not images:
            where = split_dir / GOOD / ("rgb" if layout == MVTEC_3D else "")
            problems.append(Problem(where, "no training images; expected defect-free *.png here"))
        for image in images:
            if defect == GOOD:
                samples.append(Sample(image, None, 0, GOOD))
                continue
            mask = _find_mask(mask_dir, mask_name.format(image.stem))
            if mask is None:
                expected = mask_dir / (mask_name.format(image.stem) + ".png")
                problems.append(
                    Problem(image, f"defective test image has no mask; expected {expected}")
                )
            samples.append(Sample(image, mask, 1, defect))
    if not samples and split != "train":
        problems.append(Problem(split_dir, f"no images in the {split} split; " + EXPECTED_LAYOUT))
    return samples, problems
