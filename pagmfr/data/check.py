"""``pagmfr data check``: count every split's images and masks and list every problem."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pagmfr.data.dataset import decode_sample
from pagmfr.data.images import ImageReadError
from pagmfr.data.layout import (
    GOOD,
    SPLITS,
    DatasetError,
    Problem,
    category_dir,
    detect_layout,
    list_categories,
    scan_split,
)


@dataclass
class SplitSummary:
    """How many images (and masks) each defect type of one split has."""

    category: str
    split: str
    images: dict[str, int]
    masks: dict[str, int]


@dataclass
class CheckReport:
    """Everything ``pagmfr data check`` found: counts per split and every problem."""

    root: Path
    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def format(self) -> str:
        """The counts and problems as the lines ``pagmfr data check`` prints."""
        lines = [f"data root: {self.root}"]
        for summary in self.splits:
            total = sum(summary.images.values())
            lines.append(f"  {summary.category:<14} {summary.split:<10} {total:>5} images")
            for defect, count in summary.images.items():
                masks = "" if defect == GOOD else f", {summary.masks.get(defect, 0)} masks"
                lines.append(f"    {defect:<24} {count:>5} images{masks}")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  - {p}" for p in self.problems)
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def check_dataset(root: str | Path, categories: list[str] | None = None) -> CheckReport:
    """Scan and decode every image and mask under ``root``; never stops at the first problem."""
    report = CheckReport(Path(root))
    if categories is None:
        categories = list_categories(root)
        if not categories:
            report.problems.append(
                Problem(Path(root), "no categories found (no <category>/train or /test folders)")
            )
    for category in categories:
        try:
            layout = detect_layout(category_dir(root, category))
        except DatasetError as err:
            report.problems.extend(err.problems)
            continue
        for split in SPLITS[layout]:
            samples, problems = scan_split(root, category, split, layout)
            report.problems.extend(problems)
            images = Counter(s.defect for s in samples)
            masks = Counter(s.defect for s in samples if s.mask is not None)
            report.splits.append(SplitSummary(category, split, dict(sorted(images.items())), masks))
            for sample in samples:
                try:
                    decode_sample(sample)
                except DatasetError as err:
                    report.problems.extend(err.problems)
                except ImageReadError as err:
                    report.problems.append(Problem(err.path, err.reason))
    return report
