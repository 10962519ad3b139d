"""What a study prints while it runs: one line per finished or failed cell, and a progress bar
of cells done, running, failed and left, with an ETA from the cells' measured times (tqdm's
average rate). On a terminal the bar redraws in place; into a log (``ray submit ... > log``,
CI) it is a plain line after each cell. Tune's own status tables are off unless
``--verbose``."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ray.tune import Callback
from tqdm import tqdm

from pagmfr.study.recorder import trial_error
from pagmfr.study.spec import TrialSpec
from pagmfr.study.text import HEADLINE, duration, last_line
from pagmfr.study.trainable import METRICS


class StudyProgress(Callback):
    """A Tune callback on the driver: a line per cell that ends, and the bar."""

    def __init__(
        self,
        total: int,
        spec_of: Callable[[dict[str, Any]], TrialSpec],
        stream: TextIO | None = None,
    ):
        self.spec_of = spec_of
        self.stream = stream or sys.stderr
        self.redraws = self.stream.isatty()
        self.bar = tqdm(
            total=total,
            unit="cell",
            # a log gets the bar as a line per cell (``_end``), not carriage-return redraws
            file=self.stream if self.redraws else io.StringIO(),
            smoothing=0,  # the ETA from the average time per cell so far
            dynamic_ncols=True,
            bar_format="{n}/{total} cells done |{bar:20}| {elapsed} elapsed, ETA {remaining}"
            "{postfix}",
        )
        self.started: dict[str, float] = {}
        self.running: set[str] = set()
        self.results: dict[str, dict[str, float]] = {}
        self.failed = 0
        self._show()

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks into the experiment state: the bar and the stream (a
        terminal, or a test's captured output) are this process's, and stay out of it."""
        return {**self.__dict__, "bar": None, "stream": None}

    def _show(self) -> None:
        left = self.bar.total - self.bar.n - len(self.running)
        self.bar.set_postfix_str(
            f"running {len(self.running)}, failed {self.failed}, left {max(left, 0)}"
        )

    def _name(self, trial) -> str:
        return self.spec_of(trial.config).name

    def _end(self, trial, line: str) -> None:
        seconds = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        self.running.discard(trial.trial_id)
        self.bar.write(f"{line} ({duration(seconds)})", file=self.stream)
        self.bar.update(1)
        self._show()
        if not self.redraws:
            print(self.bar, file=self.stream, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.monotonic())
        self.running.add(trial.trial_id)
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final"):
            self.results[trial.trial_id] = result.get(METRICS, {})

    def on_trial_complete(self, iteration, trials, trial, **info):
        metrics = self.results.get(trial.trial_id)
        if metrics is None:  # an HPO trial that ASHA stopped: no test
            self._end(trial, f"stopped early  {self._name(trial)}")
            return
        shown = " ".join(f"{name} {metrics[k]:.3f}" for k, name in HEADLINE.items() if k in metrics)
        self._end(trial, f"finished  {self._name(trial)}: {shown}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed += 1
        self._end(trial, f"FAILED  {self._name(trial)}: {last_line(trial_error(trial))}")

    def on_experiment_end(self, trials, **info):
        self.bar.close()
