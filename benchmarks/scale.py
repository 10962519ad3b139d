"""The study harness at scale: ablation studies of 100 and 1,000 cells of a method that trains in
milliseconds (registered here: a 1x1 convolution at 32 px, 1 epoch, on the embedded data), on a
local Ray of several logical nodes (each 2 logical CPUs and 1 logical GPU, trials asking 0.5
CPU and 0.25 GPU, so four trials pack onto each GPU), recorded in a real ``mlflow server`` on
loopback. Per study size it prints the harness overhead per cell (the steady-state wall time
per cell, less the cells' own training and test time as the trainable measures it, over the
parallelism the machine has), cells per minute, the driver's CPU time per cell and peak memory,
the MLflow client calls and HTTP requests per cell, the time of ``pagmfr report`` and of a
resumed run with nothing left to do; and the report on a store filled with 10,000 finished
cells. The last column is the growth from the smallest to the largest study: for 10x the cells,
1x per cell is flat (the target: overhead per cell at most 1.5x). Fits 15 minutes on 2 CPUs.

Run: ``python benchmarks/scale.py`` (``--quick``: a 10-cell smoke of the whole pipeline).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
import requests  # noqa: E402
import sqlalchemy  # noqa: E402
import torch  # noqa: E402
from mlflow.store.tracking.dbmodels.models import (  # noqa: E402
    SqlLatestMetric,
    SqlMetric,
    SqlParam,
    SqlRun,
    SqlTag,
)
from mlflow.tracking import MlflowClient  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.tune.execution.tune_controller import TuneController  # noqa: E402
from torch import nn  # noqa: E402

from pagmfr.config import Config, selection_of  # noqa: E402
from pagmfr.engine import TEST_METRICS  # noqa: E402
from pagmfr.models import AnomalyMethod, register_model  # noqa: E402
from pagmfr.report import report_study  # noqa: E402
from pagmfr.report.load import runs_from_mlflow  # noqa: E402
from pagmfr.study import StudyGrid, StudyOptions, run_ablation  # noqa: E402
from pagmfr.study.recorder import MLflowRecorder  # noqa: E402
from pagmfr.study.tracking import StudyTracker  # noqa: E402

CATEGORIES = ("brick", "gravel", "coffee", "coins")
TRAINING = {
    "method": "tiny",
    "data.root": "synthetic",
    "data.image_size": 32,
    "train.batch_size": 8,
    "train.epochs": 1,
    "backbone.weights": "none",
}
#: The simulated nodes (loopback addresses of their own, clear of the tests' 127.0.0.2-7).
NODES = ("127.0.0.21", "127.0.0.22", "127.0.0.23")
NODE_CPUS, NODE_GPUS = 2, 1
CPUS_PER_TRIAL, GPUS_PER_TRIAL = 0.5, 0.25
#: Trials the simulated cluster runs at once, and the parallelism this machine really has.
SLOTS = int(len(NODES) * min(NODE_CPUS / CPUS_PER_TRIAL, NODE_GPUS / GPUS_PER_TRIAL))
PARALLEL = min(SLOTS, os.cpu_count() or 1)


@dataclass
class TinySettings:
    """The tiny method's own setting: the variants differ by it."""

    width: int = 1

    def checks(self) -> list[tuple[str, bool, str]]:
        """The registry's validation of the setting."""
        return [("width", self.width >= 1, "must be >= 1")]


class Tiny(AnomalyMethod):
    """A 1x1 convolution whose squared output is the anomaly map: trains in milliseconds."""

    default_scheduler = "constant"

    def __init__(self, config: Config):
        super().__init__()
        self.embed = nn.Conv2d(3, config.tiny.width, 1)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        loss = self.embed(batch["image"]).pow(2).mean()
        return loss, {}

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map = self.embed(images).pow(2).sum(1, keepdim=True)
        return anomaly_map, anomaly_map.flatten(1).amax(1)


register_model("tiny", Tiny, settings=TinySettings)


# ---- what is measured ----


class CallCounter:
    """MlflowClient's public calls (the outermost only: one the benchmark or the study makes)
    and the HTTP requests under them, counted process-wide by wrapping both classes."""

    def __init__(self) -> None:
        self.client_calls = 0
        self.http_requests = 0
        self._inside = threading.local()

    def install(self) -> None:
        """Wrap MlflowClient's public methods and requests' sessions (once per process)."""
        for name, member in vars(MlflowClient).items():
            if callable(member) and not name.startswith("_"):
                setattr(MlflowClient, name, self._counted(member))
        request = requests.Session.request

        def counted_request(session: requests.Session, *args: Any, **kwargs: Any) -> Any:
            self.http_requests += 1
            return request(session, *args, **kwargs)

        requests.Session.request = counted_request

    def _counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method``, counting its calls that no other client call made."""

        def counted(*args: Any, **kwargs: Any) -> Any:
            outermost = not getattr(self._inside, "depth", 0)
            self.client_calls += outermost
            self._inside.depth = getattr(self._inside, "depth", 0) + 1
            try:
                return method(*args, **kwargs)
            finally:
                self._inside.depth -= 1

        return counted

    def snapshot(self) -> tuple[int, int]:
        """Client calls and HTTP requests so far."""
        return self.client_calls, self.http_requests


COUNTER = CallCounter()
#: When Tune added each trial (before any actor runs it) and when each completed (the
#: recorder's Tune events, as the driver sees them).
ADDED: list[float] = []
COMPLETIONS: list[float] = []


def time_trials() -> None:
    """Note the time of every trial Tune adds and every completion the driver records."""
    TuneController.add_trial = timed(TuneController.add_trial, ADDED)
    MLflowRecorder.on_trial_complete = timed(MLflowRecorder.on_trial_complete, COMPLETIONS)


def timed(event: Callable[..., None], times: list[float]) -> Callable[..., None]:
    """``event``, appending the time it ends at to ``times``."""

    def noted(self: Any, *args: Any, **kwargs: Any) -> None:
        event(self, *args, **kwargs)
        times.append(time.perf_counter())

    return noted


def cpu_seconds() -> float:
    """The driver process's CPU time so far (its threads: Tune's loop, Ray's client, MLflow's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    """The driver's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_starts() -> int:
    """Worker processes the local Ray's raylets have started so far, from their logs: each is a
    Python start-up (a trial actor started cold, or one that Tune requested, then dropped)."""
    logs = Path(os.environ["RAY_TMPDIR"]).glob("ray/session_*/logs/raylet*.out")
    return sum(log.read_text(errors="replace").count("Started worker process") for log in logs)


@dataclass
class Measured:
    """One measured span: wall and driver CPU seconds, MLflow calls and HTTP requests, Ray
    worker processes started."""

    wall: float = 0.0
    cpu: float = 0.0
    client_calls: int = 0
    http_requests: int = 0
    worker_starts: int = 0


@contextmanager
def measure() -> Iterator[Measured]:
    """Time and count what runs inside."""
    result = Measured()
    wall, cpu, (calls, http) = time.perf_counter(), cpu_seconds(), COUNTER.snapshot()
    workers = worker_starts()
    yield result
    result.wall = time.perf_counter() - wall
    result.cpu = cpu_seconds() - cpu
    now_calls, now_http = COUNTER.snapshot()
    result.client_calls, result.http_requests = now_calls - calls, now_http - http
    result.worker_starts = worker_starts() - workers


# ---- the servers ----


def free_port() -> int:
    """A port nothing listens on now, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_server(folder: Path) -> Iterator[tuple[str, Path]]:
    """A real ``mlflow server`` on 127.0.0.1 (one worker, sqlite store, as
    cluster/start_mlflow.sh runs it): its address and its database file."""
    port, database = free_port(), folder / "mlflow.db"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{database}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(folder / "server.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(uri, server)
        yield uri, database
    finally:
        stop(server)
        log.close()


def stop(server: subprocess.Popen, grace: float = 30) -> None:
    """End the server and its worker (its own session), killing them after ``grace`` s."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_for_health(uri: str, server: subprocess.Popen, timeout: float = 120) -> None:
    """Until the server answers (it takes seconds to start), or fail when it exits."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            return
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError("the mlflow server did not start (see server.log)") from None
            time.sleep(0.5)


@contextmanager
def local_cluster() -> Iterator[Cluster]:
    """Ray nodes on loopback addresses of their own, each with logical CPUs and a logical
    GPU; the driver connected to them."""
    head = {"node_ip_address": NODES[0], "include_dashboard": False}
    cluster = Cluster(
        initialize_head=True, head_node_args={**head, "num_cpus": NODE_CPUS, "num_gpus": NODE_GPUS}
    )
    try:
        for address in NODES[1:]:
            cluster.add_node(num_cpus=NODE_CPUS, num_gpus=NODE_GPUS, node_ip_address=address)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


# ---- the studies ----


def grid_shape(cells: int) -> tuple[int, int, int]:
    """(variants, categories, seeds) of ``cells`` cells."""
    variants = 10 if cells >= 1000 else 5
    categories = len(CATEGORIES) if cells % (variants * len(CATEGORIES)) == 0 else 2
    seeds = cells // (variants * categories)
    if variants * categories * seeds != cells:
        raise ValueError(f"{cells} cells: not a grid of 5 or 10 variants x 2 or 4 categories")
    return variants, categories, seeds


def study_grid(cells: int) -> StudyGrid:
    """``cells`` cells: variants that differ by the tiny method's width x categories x seeds."""
    variants, categories, seeds = grid_shape(cells)
    return StudyGrid(
        Config().with_overrides(TRAINING),
        {f"width {w}": {"tiny.width": w} for w in range(1, variants + 1)},
        CATEGORIES[:categories],
        list(range(seeds)),
    )


@dataclass
class StudyFigures:
    """What one study size measured."""

    cells: int
    study: Measured
    #: From the study's start to Tune's first trial: the driver's own work before any trial
    #: can run (the grid, MLflow's records, Tune's set-up).
    startup: float
    #: From Tune's first trial to the first finished cell: trial actors start cold (a Python
    #: process importing torch each), whatever the number of cells.
    cold_start: float
    steady_seconds_per_cell: float
    own_seconds_per_cell: float
    peak_rss_mib: float
    report: Measured
    resumed: Measured

    def overhead_per_cell(self) -> float:
        """The study's wall time per cell, less the actors' cold start (a fixed cost) and the
        cells' own time over the real parallelism: what the harness adds to each cell."""
        wall = (self.study.wall - self.cold_start) / self.cells
        return wall - self.own_seconds_per_cell / PARALLEL


def own_seconds_per_cell(uri: str, study: str) -> float:
    """The cells' own training and test time, as the trainable measured and MLflow recorded
    it (epoch and inference seconds)."""
    runs = runs_from_mlflow(uri, study)
    return float((runs["epoch_seconds"] + runs["inference_seconds"]).mean())


def run_study(uri: str, folder: Path, cells: int) -> StudyFigures:
    """A study of ``cells`` cells, its report, and the same study run again."""
    name = f"scale-{cells}"
    options = StudyOptions(
        name=name,
        tracking_uri=uri,
        storage_path=str(folder / "runs"),
        cpus_per_trial=CPUS_PER_TRIAL,
        gpus_per_trial=GPUS_PER_TRIAL,
        verbose=0,
    )
    grid = study_grid(cells)
    ADDED.clear()
    COMPLETIONS.clear()
    started = time.perf_counter()
    with measure() as study:
        summary = run_ablation(grid, options)
    assert summary.trained == cells and not summary.failed, summary.describe()
    startup, cold_start = ADDED[0] - started, COMPLETIONS[0] - ADDED[0]
    steady = (COMPLETIONS[-1] - COMPLETIONS[0]) / max(len(COMPLETIONS) - 1, 1)
    rss = peak_rss_mib()
    with measure() as report:
        report_study(uri, name, folder / f"report-{cells}")
    with measure() as resumed:
        again = run_ablation(grid, options)
    assert again.already_finished == cells and again.trained == 0, again.describe()
    own = own_seconds_per_cell(uri, name)
    return StudyFigures(cells, study, startup, cold_start, steady, own, rss, report, resumed)


# ---- the filled store ----


def cell_rows(
    tracker: StudyTracker, artifact_root: str, base: dict[str, Any], cell: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """The rows of one finished cell run, as ``StudyTracker.open_cell`` and the recorder
    write them: its tags, its flat config as params (``base`` with its category and seed),
    an epoch's and the test metrics."""
    run_id, now = uuid.uuid4().hex, int(time.time() * 1000)
    name = f"{cell['variant']} / {cell['category']} / seed {cell['seed']}"
    width = int(cell["variant"].removeprefix("width "))
    config = base | {"data.category": cell["category"], "train.seed": cell["seed"]}
    config["tiny.width"] = width
    tags = {
        "mlflow.runName": name,
        "role": "cell",
        "study": tracker.study,
        "method": "tiny",
        "variant": cell["variant"],
        "overrides": f"tiny.width={width}",
        "category": cell["category"],
        "kind": cell["kind"],
        "seed": str(cell["seed"]),
        "selection": selection_of(config),
        "cell_key": cell["key"],
        "config_key": cell["config_key"],
        "code_version": "filled",
        "code_fingerprint": "filled",
        "attempts": "1",
        "study_run_id": tracker.parent_id,
    }
    value = zlib.crc32(cell["key"].encode()) / 2**32
    metrics = {m: value for m in TEST_METRICS} | {"epoch_seconds": 0.05, "loss": value}
    run = {
        "run_uuid": run_id,
        "name": name,
        "source_type": "LOCAL",
        "source_name": "",
        "entry_point_name": "",
        "user_id": "benchmark",
        "status": "FINISHED",
        "start_time": now,
        "end_time": now,
        "source_version": "",
        "lifecycle_stage": "active",
        "artifact_uri": f"{artifact_root}/{run_id}/artifacts",
        "experiment_id": int(tracker.experiment_id),
    }
    return {
        "runs": [run],
        "tags": [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()],
        "params": [{"key": k, "value": str(v), "run_uuid": run_id} for k, v in config.items()],
        "metrics": [
            {"key": k, "value": v, "timestamp": now, "step": 0, "is_nan": False, "run_uuid": run_id}
            for k, v in metrics.items()
        ],
    }


def declared_cells(cells: int) -> dict[str, Any]:
    """A grid declaration of ``cells`` cells with made-up keys (nothing is trained)."""
    variants, categories, seeds = grid_shape(cells)
    names = [f"width {w}" for w in range(1, variants + 1)]
    kinds = {"brick": "texture", "gravel": "texture", "coffee": "object", "coins": "object"}
    return {
        "variants": [{"name": v, "overrides": f"tiny.width={v[6:]}"} for v in names],
        "categories": [{"name": c, "kind": kinds[c]} for c in CATEGORIES[:categories]],
        "seeds": list(range(seeds)),
        "cells": [
            {"variant": v, "category": c, "seed": s, "kind": kinds[c]}
            | {"key": f"k{i}", "config_key": f"c{i}"}
            for i, (v, c, s) in enumerate(
                (v, c, s) for v in names for c in CATEGORIES[:categories] for s in range(seeds)
            )
        ],
    }


def fill_store(uri: str, database: Path, cells: int) -> str:
    """A study of ``cells`` finished cells: its study run and grid through ``StudyTracker``,
    the cell runs written into the server's store in one transaction (through the client,
    10,000 runs take longer than this whole benchmark). Returns the study's name."""
    study = f"filled-{cells}"
    tracker = StudyTracker(uri, study)
    grid = declared_cells(cells)
    tracker.declare_grid(grid)
    root = tracker.client.get_experiment(tracker.experiment_id).artifact_location
    tables = {"runs": SqlRun, "tags": SqlTag, "params": SqlParam, "metrics": SqlMetric}
    base = Config().with_overrides(TRAINING).to_flat()
    rows: dict[str, list] = {name: [] for name in tables}
    for cell in grid["cells"]:
        for name, more in cell_rows(tracker, root, base, cell).items():
            rows[name] += more
    engine = sqlalchemy.create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        for name, model in tables.items():
            connection.execute(sqlalchemy.insert(model.__table__), rows[name])
        connection.execute(sqlalchemy.insert(SqlLatestMetric.__table__), rows["metrics"])
    engine.dispose()
    tracker.close_study({"cells": cells, "failed": 0, "interrupted": 0})
    return study


def time_filled_report(uri: str, database: Path, folder: Path, cells: int) -> Measured:
    """``pagmfr report`` on a filled store of ``cells`` finished cells."""
    study = fill_store(uri, database, cells)
    with measure() as report:
        made = report_study(uri, study, folder / f"report-{study}")
    assert len(made.selection.kept) == cells, len(made.selection.kept)
    return report


# ---- the table ----


def rows_of(figures: StudyFigures) -> dict[str, float]:
    """The printed figures of one study size."""
    cells = figures.cells
    return {
        "study wall time (s)": figures.study.wall,
        "cells per minute": 60 * cells / figures.study.wall,
        "driver's start-up, to Tune's first trial (s)": figures.startup,
        "first trial to first finished cell (s)": figures.cold_start,
        "steady-state wall per cell (s)": figures.steady_seconds_per_cell,
        "cells' own train+test time per cell (s)": figures.own_seconds_per_cell,
        "harness overhead per cell (s)": figures.overhead_per_cell(),
        "driver CPU per cell (s)": figures.study.cpu / cells,
        "driver peak RSS (MiB)": figures.peak_rss_mib,
        "MLflow client calls per cell": figures.study.client_calls / cells,
        "MLflow HTTP requests per cell": figures.study.http_requests / cells,
        "Ray worker processes started per cell": figures.study.worker_starts / cells,
        "pagmfr report (s)": figures.report.wall,
        "resumed run, nothing to do (s)": figures.resumed.wall,
    }


def print_table(studies: list[StudyFigures]) -> None:
    """One column per study size, and the growth from the first to the last."""
    table = [rows_of(f) for f in studies]
    header = "".join(f"{f'{f.cells:,} cells':>14}" for f in studies)
    print(f"{'':48}{header}{'growth (x)':>12}")
    for label in table[0]:
        values = [row[label] for row in table]
        growth = values[-1] / values[0] if values[0] else float("nan")
        print(f"{label:48}" + "".join(f"{v:14.3f}" for v in values) + f"{growth:12.2f}")


def print_results(studies: list[StudyFigures], filled: int, filled_report: Measured) -> None:
    """The setting, the table, the filled store's report and the overhead's growth."""
    print(
        f"{len(NODES)} logical nodes x ({NODE_CPUS} CPU, {NODE_GPUS} GPU), trials of "
        f"{CPUS_PER_TRIAL} CPU + {GPUS_PER_TRIAL} GPU ({SLOTS} at once); {PARALLEL} physical "
        "cores; MLflow: a local mlflow server (sqlite)"
    )
    print_table(studies)
    first, last = studies[0], studies[-1]
    print(
        f"pagmfr report on {filled:,} filled cells: {filled_report.wall:.2f} s "
        f"({filled_report.wall / last.report.wall:.2f}x the {last.cells:,}-cell report)"
    )
    if len(studies) > 1:
        ratio = last.overhead_per_cell() / first.overhead_per_cell()
        print(
            f"harness overhead per cell, {last.cells:,} vs {first.cells:,} cells: {ratio:.2f}x "
            "(target <= 1.5x)"
        )


def measure_all(sizes: list[int], filled: int) -> tuple[list[StudyFigures], Measured]:
    """Every study size on one cluster and MLflow server, then the report on a filled store."""
    with (
        tempfile.TemporaryDirectory(prefix="scale-", ignore_cleanup_errors=True) as folder,
        tempfile.TemporaryDirectory(prefix="rs-", dir="/tmp") as ray_temp,
    ):
        os.environ["RAY_TMPDIR"] = ray_temp  # the cluster's record stays out of /tmp/ray
        with mlflow_server(Path(folder)) as (uri, database):
            with local_cluster():
                studies = [run_study(uri, Path(folder), cells) for cells in sizes]
            return studies, time_filled_report(uri, database, Path(folder), filled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 10-cell smoke of the pipeline")
    args = parser.parse_args()
    sizes, filled = ([10], 100) if args.quick else ([100, 1000], 10_000)
    started = time.perf_counter()
    COUNTER.install()
    time_trials()
    studies, filled_report = measure_all(sizes, filled)
    print_results(studies, filled, filled_report)
    print(f"total {time.perf_counter() - started:.0f} s (target < 900 s on 2 CPUs)")


if __name__ == "__main__":
    main()
