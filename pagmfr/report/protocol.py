"""The protocol line under every table: how its numbers were measured (image size, backbone,
epochs, tested epoch, seeds, AU-PRO's FPR limit, metric resolution, code and data), read from
what the table's own runs recorded, so that no table states a protocol its runs did not follow.
Where the runs disagree on a setting, the line says so and counts the runs of each value:
``epochs (runs disagree): 2 (6 runs) or 600 (12 runs)``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from pagmfr.report.load import FPR_LIMIT
from pagmfr.report.select import text_column

NOT_RECORDED = "not recorded"
#: Hex digits of a code or data fingerprint the line shows (16 and 32 are recorded).
SHORT = 8


def _run_count(count: int) -> str:
    return f"{count} run" + ("s" if count != 1 else "")


@dataclass(frozen=True)
class Setting:
    """One setting of the protocol and the values the runs recorded for it."""

    name: str
    #: Group (a method, a category; "" for none) -> value -> how many runs recorded it.
    values: dict[str, dict[str, int]]

    @property
    def disagree(self) -> bool:
        """Whether the runs of one group recorded more than one value."""
        return any(len(counts) > 1 for counts in self.values.values())

    def text(self) -> str:
        """``epochs: 600``; ``code: pagmfr 1a2b3c4d, rgpkd 5e6f7a8b``; a disagreement names
        every value with its run count."""
        shown = []
        for group, counts in self.values.items():
            value = (
                " or ".join(f"{v} ({_run_count(n)})" for v, n in counts.items())
                if len(counts) > 1
                else next(iter(counts))
            )
            shown.append(f"{group} {value}" if group else value)
        flag = " (runs disagree)" if self.disagree else ""
        return f"{self.name}{flag}: {', '.join(shown)}"


@dataclass(frozen=True)
class Protocol:
    """Every setting of a table's protocol, in the order the line states them."""

    settings: tuple[Setting, ...] = ()

    def setting(self, name: str) -> Setting:
        """The setting called ``name``."""
        return next(s for s in self.settings if s.name == name)

    @property
    def text(self) -> str:
        """The settings as one line, unescaped (each output escapes it)."""
        return "; ".join(s.text() for s in self.settings)

    @property
    def sentence(self) -> str:
        """The line as a table's notes print it: ``Protocol: image size: 256 px; ...``."""
        return f"Protocol: {self.text}."


def _counts(values: Iterable[str]) -> dict[str, int]:
    """Each value with its run count, the most frequent first (then by value)."""
    return dict(sorted(Counter(values).items(), key=lambda item: (-item[1], item[0])))


def _recorded(
    runs: pd.DataFrame, column: str, shown: str = "{}", length: int | None = None
) -> pd.Series:
    """Each run's value of ``column`` (its first ``length`` characters) as the line shows it,
    or :data:`NOT_RECORDED`."""
    text = text_column(runs, column).str[:length]
    return text.map(lambda v: shown.format(v) if v else NOT_RECORDED)


def _single(name: str, values: pd.Series) -> Setting:
    return Setting(name, {"": _counts(values)})


def _grouped(name: str, groups: pd.Series, values: pd.Series) -> Setting:
    """One value (or several, when runs disagree) per group (text), groups in the runs'
    order."""
    return Setting(
        name, {group: _counts(values[groups == group]) for group in dict.fromkeys(groups)}
    )


def _code(runs: pd.DataFrame) -> pd.Series:
    """Each run's code: its method's code fingerprint (a study cell's), shortened, else its
    code version (a stand-alone run's, or a study recorded before fingerprints)."""
    fingerprint = _recorded(runs, "tags.code_fingerprint", length=SHORT)
    return fingerprint.where(fingerprint != NOT_RECORDED, _recorded(runs, "tags.code_version"))


def _resolution(runs: pd.DataFrame) -> pd.Series:
    """Each run's metric resolution: full (the images' own size, recorded as "full") or the
    model's (a study cell's "model", a metrics.json's "256px")."""
    recorded = text_column(runs, "resolution")
    return recorded.map(
        lambda v: (
            NOT_RECORDED if not v else "full resolution" if v == "full" else "model resolution"
        )
    )


def data_digest(fingerprints: dict[str, str]) -> str:
    """One short digest of every category's data fingerprint: the first :data:`SHORT` hex
    digits of the SHA-256 of the sorted ``category=fingerprint`` lines, so anyone can check it
    against runs.csv. One digest keeps the line short where a study has 15 categories."""
    lines = "".join(f"{c}={f}\n" for c, f in sorted(fingerprints.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:SHORT]


def _data(runs: pd.DataFrame) -> Setting:
    """The data: one digest of the categories' fingerprints (:func:`data_digest`); each
    category's own, shortened, where one has several or none; "not recorded" where no run has
    one."""
    recorded = text_column(runs, "tags.data_fingerprint")
    if (recorded == "").all():
        return _single("data", _recorded(runs, "tags.data_fingerprint"))
    shortened = _recorded(runs, "tags.data_fingerprint", length=SHORT)
    per_category = _grouped("data", text_column(runs, "category"), shortened)
    if per_category.disagree or (recorded == "").any():
        return per_category
    categories = runs["category"].nunique()
    digest = data_digest(dict(zip(runs["category"], recorded, strict=True)))
    shown = f"{digest} ({categories} categor{'y' if categories == 1 else 'ies'})"
    return Setting("data", {"": {shown: len(runs)}})


def protocol_of(
    runs: pd.DataFrame, metrics: Collection[str], left_out: Sequence[str] = ()
) -> Protocol:
    """The protocol of the table of ``metrics`` that ``runs`` (one finished run per cell) fill;
    AU-PRO's FPR limit only where the table shows AU-PRO; ``left_out``, the runs whose value
    was not finite, counted and named beside the runs averaged."""
    backbone = (
        _recorded(runs, "params.backbone.name") + "/" + _recorded(runs, "params.backbone.weights")
    )
    settings = [
        _single("image size", _recorded(runs, "params.data.image_size", "{} px")),
        _single(
            "backbone/weights", backbone.replace(f"{NOT_RECORDED}/{NOT_RECORDED}", NOT_RECORDED)
        ),
        _single("epochs", _recorded(runs, "params.train.epochs")),
        _single("tested epoch", _recorded(runs, "selection")),
        Setting("seeds", {"": {", ".join(map(str, sorted(set(runs["seed"])))): len(runs)}}),
    ]
    if left_out:
        named = f"{len(runs)} averaged, {len(left_out)} left out with a non-finite value"
        settings.append(Setting("runs", {"": {f"{named} ({'; '.join(left_out)})": len(runs)}}))
    if any("au_pro" in metric for metric in metrics):  # val_au_pro, best_val_au_pro too
        settings.append(_single("AU-PRO FPR limit", _recorded(runs, FPR_LIMIT)))
    settings += [
        _single("metrics at", _resolution(runs)),
        _grouped("code", text_column(runs, "method"), _code(runs)),
        _data(runs),
    ]
    return Protocol(tuple(settings))
