"""A report from start to end: the runs loaded, selected, tabulated, ranked and written in
every format, with the diagrams; ``report_study`` (a study's MLflow runs) and ``report_folders``
(stand-alone training folders) are its two sources."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from pagmfr.files import publish_files, require_output_folder, staging_folder
from pagmfr.report import cd_diagram, latex, markdown, page, tidy
from pagmfr.report.cd_diagram import Diagram
from pagmfr.report.components import ComponentTable, component_table
from pagmfr.report.escape import identifier
from pagmfr.report.load import TRANSFER, grid_from_mlflow, runs_from_folders, runs_from_mlflow
from pagmfr.report.protocol import protocol_of
from pagmfr.report.ranks import DEFAULT_ALPHA, Ranking, check_alpha, rank_variants
from pagmfr.report.select import Missing, Selection, select_runs, without_non_finite
from pagmfr.report.tables import MetricTable, build_table
from pagmfr.report.text import missing_lines

FORMATS = ("latex", "md", "csv", "html")
DEFAULT_METRICS = ("image_auroc", "pixel_auroc", "au_pro")
#: Failures listed in the error of a study with no finished run.
LISTED_FAILURES = 20
#: The LaTeX file every report writes besides one per metric.
COMPONENTS_TEX = "components.tex"
#: The list of a report's files in its folder: the next report into the folder removes those
#: it does not write again, and nothing else.
MANIFEST = "report-files.json"


@dataclass
class Report:
    """What a report wrote: its tables, the missing cells, the dropped duplicates and the files."""

    tables: list[MetricTable]
    components: ComponentTable
    selection: Selection
    files: list[Path]
    #: Transfer evaluations (a checkpoint tested on another category) left out of the tables.
    transfers_left_out: int = 0
    #: Each metric's ranking of the variants (its critical-difference diagram), in table order.
    rankings: list[Ranking] = field(default_factory=list)

    @property
    def missing(self) -> list[Missing]:
        """The cells with no finished run."""
        return self.selection.missing

    @property
    def duplicates_dropped(self) -> int:
        """Finished copies of a kept run's cell that were not kept."""
        return self.selection.duplicates_dropped


def _no_finished_run(title: str, selection: Selection) -> ValueError:
    lines = missing_lines(selection.missing)[1:]
    shown = lines[:LISTED_FAILURES]
    more = len(lines) - len(shown)
    return ValueError(
        f"{title}: no finished run yet; {len(lines)} cell(s) without one:\n  "
        + "\n  ".join(shown)
        + (f"\n  ... and {more} more" if more else "")
    )


def figure_stem(metric: str) -> str:
    """A metric's critical-difference files without the extension (``au_pro-cd``: ``.svg``,
    ``.pdf``, ``.tex``)."""
    return f"{identifier(metric)}-cd"


def tex_file_names(metrics: list[str]) -> dict[str, str]:
    """Each metric's LaTeX file name in the output folder: a slug of the metric
    (``loss/feature`` -> ``loss-feature.tex``), never a path, whatever a hand-edited metric
    holds (``../../x``). The slug also makes the table's LaTeX label and HTML id, so two
    metrics that would share one, or a metric whose table or diagram would replace the
    component table or another metric's diagram, are refused in every format, naming them."""
    owners = {COMPONENTS_TEX: "the component table"}
    names = {}
    for metric in metrics:
        names[metric] = f"{identifier(metric)}.tex"
        files = (
            (names[metric], f"metric {metric!r}"),
            (f"{figure_stem(metric)}.tex", f"the critical-difference diagram of {metric!r}"),
        )
        for name, owner in files:
            if name in owners:
                raise ValueError(
                    f"metric {metric!r} would be written to {name}, as {owners[name]} is: "
                    "report it on its own (--metrics)"
                )
            owners[name] = owner
    return names


def _notes(selection: Selection) -> list[str]:
    kept = selection.kept
    notes = [
        f"{len(kept)} finished runs used, {selection.duplicates_dropped} duplicate finished "
        f"run(s) dropped (latest kept), {len(selection.missing)} cell(s) missing."
    ]
    shape = (
        f"{len(selection.variants)} variants x {len(selection.categories)} categories x "
        f"{len(selection.seeds)} seed(s)"
    )
    notes.append(
        f"Cells: the grid the study declared ({shape})."
        if selection.declared
        else f"Cells: inferred from the runs ({shape}; the study declared no grid)."
    )
    versions = ", ".join(f"{v} ({n} runs)" for v, n in selection.code_versions.items())
    if selection.mixed_methods:
        label = "Code versions (mixed on request)"
    elif len(selection.code_versions) > 1:
        label = "Code versions (the same training code)"
    else:
        label = "Code"
    notes.append(f"{label}: {versions}.")
    if selection.other_runs:
        notes.append(
            f"{selection.other_runs} finished run(s) of another config or code under the same "
            "variant, category and seed not used."
        )
    return notes


def build_report(
    runs: pd.DataFrame,
    out_dir: str | Path,
    title: str,
    metrics=DEFAULT_METRICS,
    reference: str | None = None,
    formats=FORMATS,
    decimals: int = 1,
    percent: bool = True,
    grid: dict[str, Any] | None = None,
    code_version: str | None = None,
    mix_code_versions: bool = False,
    test_over: str = "categories",
    label: str = "pagmfr",
    alpha: float = DEFAULT_ALPHA,
) -> Report:
    """Tables for every metric, and the component table, in every format under ``out_dir``,
    each with its protocol line, and every metric's critical-difference diagram.

    ``grid`` (a study's declared grid) names every cell; ``code_version`` reports one code
    version; runs of several code versions are refused unless ``mix_code_versions``.
    ``test_over`` pairs the tests over "categories" or "category-seed"; ``label`` prefixes
    the LaTeX labels (``tab:<label>-components``); ``alpha`` is the diagrams' significance
    level.
    """
    if not metrics:
        raise ValueError("no metric to report: name one or more (metrics)")
    if decimals < 0:
        raise ValueError(f"decimals must be 0 or more; got {decimals}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown formats {unknown}; allowed: {', '.join(FORMATS)}")
    check_alpha(alpha)
    out = require_output_folder(out_dir)
    metrics = list(dict.fromkeys(metrics))
    tex_names = tex_file_names(metrics)
    selection = select_runs(runs, grid, code_version, mix_code_versions)
    if selection.kept.empty:
        raise _no_finished_run(title, selection)
    selection, left_out = without_non_finite(selection, metrics)
    scale = 100.0 if percent else 1.0
    tables = [
        build_table(m, selection, reference, scale, decimals, test_over, left_out.get(m))
        for m in metrics
    ]
    every_left_out = list(dict.fromkeys(r for m in metrics for r in left_out.get(m, [])))
    averaged = selection.kept.dropna(subset=list(left_out))  # a finite value of every metric
    components = component_table(
        tables,
        len(selection.categories),
        selection.seeds,
        protocol_of(averaged, metrics, every_left_out),
    )
    rankings = [rank_variants(selection.kept, m, selection.variants, alpha) for m in metrics]
    notes = _notes(selection)
    # Written into a folder beside --out, then moved in: an interrupted or failed report
    # leaves the previous one whole, never a mix of two.
    with staging_folder(out) as staging:
        diagrams = _draw(rankings, staging, formats)
        texts: dict[str, str] = {}
        if "latex" in formats:
            texts.update({tex_names[t.metric]: latex.metric_table(t, label) for t in tables})
            texts[COMPONENTS_TEX] = latex.components(components, label)
            texts.update(
                {
                    f"{diagrams[t.metric].stem}.tex": latex.cd_figure(t, diagrams[t.metric], label)
                    for t in tables
                }
            )
        if "md" in formats:
            texts["report.md"] = markdown.report(title, notes, tables, selection.missing, diagrams)
            texts["components.md"] = markdown.components(components, notes)
        if "html" in formats:
            texts["report.html"] = page.page(
                title, notes, components, tables, selection.missing, diagrams
            )
        for name, text in texts.items():
            (staging / name).write_text(text)
        if "csv" in formats:
            kept = runs["run_id"].isin(selection.kept["run_id"])
            tidy.write_csv(runs.assign(kept=kept), staging / "runs.csv")
            tidy.write_csv(pd.concat([tidy.metric_rows(t) for t in tables]), staging / "tables.csv")
            tidy.write_csv(tidy.component_rows(components), staging / "components.csv")
            ranked = [(t, r) for t, r in zip(tables, rankings, strict=True) if not r.shortfall]
            if ranked:  # written only where a metric has a diagram
                ranks = pd.concat([tidy.rank_rows(t, r) for t, r in ranked])
                tidy.write_csv(ranks, staging / "ranks.csv")
                tests = pd.concat([tidy.pair_rows(t, r) for t, r in ranked])
                tidy.write_csv(tests, staging / "rank_tests.csv")
        files = publish_files(staging, out, MANIFEST)
    return Report(tables, components, selection, files, rankings=rankings)


def _draw(rankings: list[Ranking], out: Path, formats) -> dict[str, Diagram]:
    """Each metric's diagram, by metric, drawn into ``out``: ``<stem>.svg`` for Markdown and
    HTML, ``<stem>.pdf`` for LaTeX, none for a metric too small for one."""
    diagrams = {}
    for ranking in rankings:
        diagram = diagrams[ranking.metric] = Diagram(ranking, figure_stem(ranking.metric))
        if ranking.shortfall:
            continue
        if {"md", "html"} & set(formats):
            diagram.svg = cd_diagram.render(ranking, "svg")
            (out / f"{diagram.stem}.svg").write_bytes(diagram.svg)
        if "latex" in formats:
            (out / f"{diagram.stem}.pdf").write_bytes(cd_diagram.render(ranking, "pdf"))
    return diagrams


def report_study(tracking_uri: str, study: str, out_dir: str | Path, **options) -> Report:
    """A report over a study's cell runs in MLflow, with the grid it declared (see
    :func:`build_report`)."""
    runs = runs_from_mlflow(tracking_uri, study)
    grid = grid_from_mlflow(tracking_uri, study)
    return build_report(
        runs, out_dir, f"Study {study}", grid=grid, label=identifier(study), **options
    )


def transfer_variants(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with each transfer evaluation as a variant of its own, ``<method> (trained on
    <category>)``: never mixed with the results of models trained on the tested category."""
    transfer = runs[TRANSFER].notna()
    named = runs["variant"] + " (trained on " + runs[TRANSFER].astype(str) + ")"
    return runs.assign(variant=runs["variant"].where(~transfer, named))


def without_transfers(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` without transfer evaluations; refused, naming them, when nothing else is left."""
    transfer = runs[TRANSFER].notna()
    if transfer.all():
        raise ValueError(
            f"{', '.join(runs['run_id'])}: only transfer evaluations (a checkpoint tested on "
            "another category than it was trained on), which are left out of the tables; "
            "pass --include-transfers to report them as variants of their own"
        )
    return runs[~transfer]


def report_folders(
    folders: list[str | Path], out_dir: str | Path, include_transfers: bool = False, **options
) -> Report:
    """A report over stand-alone ``pagmfr train`` or ``pagmfr evaluate`` folders (see
    :func:`build_report`). A transfer evaluation is left out unless ``include_transfers``,
    which reports it as a variant of its own (:func:`transfer_variants`)."""
    runs = runs_from_folders(folders)
    used = transfer_variants(runs) if include_transfers else without_transfers(runs)
    report = build_report(used, out_dir, "Stand-alone runs", **options)
    return replace(report, transfers_left_out=len(runs) - len(used))


__all__ = ["FORMATS", "Report", "build_report", "report_folders", "report_study"]
