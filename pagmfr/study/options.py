"""A study's options (where and how it runs) and the summary of what a run of it did."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pagmfr.files import require_plain_name
from pagmfr.study.presets import GpusPerTrial


@dataclass
class StudyOptions:
    """Where and how a study runs; every field has a sensible local default."""

    name: str
    tracking_uri: str = "sqlite:///mlflow.db"
    storage_path: str = "runs"
    cpus_per_trial: float = 1.0
    #: GPUs per trial, by method (a number: every method's). None: not chosen, so none; a study
    #: then refuses to start on a cluster with GPUs rather than train there on CPUs.
    gpus_per_trial: GpusPerTrial | float | None = None
    #: Retries of a failing trial within one run of the study (Tune's FailureConfig).
    max_failures: int = 1
    max_concurrent_trials: int | None = None
    checkpoint_every: int = 1
    #: Also store each cell's best checkpoint as an MLflow artifact.
    keep_checkpoint: bool = False
    #: Where cells train (``<cells>/<study>/cells/<key>``). A restarted driver's cells resume
    #: from here, so on a cluster make it a shared filesystem (EFS, NFS). Default: the storage
    #: path when it is a local folder, else ``~/pagmfr-cells`` on each node (then only Tune's
    #: checkpoints bring a trial back, after a node failure).
    cells_path: str | None = None
    #: Count cells finished with older code as done; by default they are retrained.
    keep_old_results: bool = False
    #: Ray Tune's own console output: 0 none (the study prints a line per cell and a progress
    #: bar), 1 its status tables, 2 its trial results too.
    verbose: int = 0

    def __post_init__(self) -> None:
        require_plain_name(self.name, "study name")  # it names folders under the storage path
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, not {self.checkpoint_every}")
        if self.max_failures < 0:  # Ray reads a negative count as "retry forever"
            raise ValueError(
                f"--max-failures {self.max_failures}: must be 0 or more (the retries of a "
                "failing trial; 0: none)"
            )
        if isinstance(self.gpus_per_trial, (int, float)):
            self.gpus_per_trial = GpusPerTrial(float(self.gpus_per_trial))

    def gpus(self) -> GpusPerTrial:
        """The GPUs each trial requests (none when not chosen)."""
        return self.gpus_per_trial or GpusPerTrial()

    def cells(self) -> str:
        """The absolute cells folder (see ``cells_path``)."""
        if self.cells_path:
            return str(Path(self.cells_path).expanduser().resolve())
        return (
            str(Path("~/pagmfr-cells").expanduser())
            if "://" in self.storage_path
            else self.storage()
        )

    def storage(self) -> str:
        """Tune wants an absolute path or a URI (s3://...)."""
        return (
            self.storage_path
            if "://" in self.storage_path
            else str(Path(self.storage_path).resolve())
        )


#: A study's exit status when an interrupt ended it, as a shell reports Ctrl-C.
INTERRUPTED = 130


class StudyInterrupted(RuntimeError):
    """A study ended by SIGINT or SIGTERM before its trials were done."""


@dataclass
class StudySummary:
    """What a run of a study did: cells, skipped, trained, failed, interrupted, MLflow
    outages."""

    name: str
    cells: int
    already_finished: int
    trained: int
    failed: list[str] = field(default_factory=list)
    tracking_uri: str = ""
    mlflow_outage: str = ""
    #: What became of cells finished with older code (retrained, or kept on request).
    code_changes: str = ""
    #: The MLflow UI's view of the study's cells.
    ui_link: str = ""
    #: Why the study run holds no report, if it does not.
    report_note: str = ""
    #: Cells an interrupt (SIGINT, SIGTERM) stopped mid-training, and how many never started.
    interrupted: list[str] = field(default_factory=list)
    not_started: int = 0

    @property
    def was_interrupted(self) -> bool:
        """Whether an interrupt ended this run of the study before every cell was done."""
        return bool(self.interrupted or self.not_started)

    def exit_code(self) -> int:
        """The study script's exit status: :data:`INTERRUPTED`, 1 when a cell failed, else 0."""
        return INTERRUPTED if self.was_interrupted else (1 if self.failed else 0)

    def describe(self) -> str:
        """The summary the study scripts print at the end."""
        lines = [
            f"study {self.name}: {self.cells} cells, {self.already_finished} already finished, "
            f"{self.trained} trained now, {len(self.failed)} failed"
            + (
                f", INTERRUPTED: {len(self.interrupted)} stopped mid-training, "
                f"{self.not_started} not started (re-run the study to resume them)"
                if self.was_interrupted
                else ""
            ),
        ]
        lines += [
            f"  {note}"
            for note in (self.code_changes, self.mlflow_outage, self.report_note)
            if note
        ]
        lines += [
            f"  failed: {name} (error recorded in MLflow; re-run the study to retry)"
            for name in self.failed
        ]
        lines += [f"  interrupted: {name} (its run is KILLED)" for name in self.interrupted]
        if self.tracking_uri.startswith(("http://", "https://")):
            lines.append(f"MLflow records: {self.ui_link}")
        else:
            lines.append(
                f"MLflow records: mlflow ui --backend-store-uri {self.tracking_uri}, then open "
                f"{self.ui_link}"
            )
        return "\n".join(lines)
