"""Joining the Ray cluster a study belongs to, or starting a local one, and checking that
the trials' GPU requests fit it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import ray

from pagmfr.logs import log
from pagmfr.study.presets import GpusPerTrial

#: Where a local Ray binds: loopback, so nothing outside this machine reaches it, and not
#: 127.0.0.1, which Ray replaces with the machine's network address.
LOCAL_NODE_IP = "127.0.0.2"
#: How long a recorded cluster may take to accept a connection before it counts as gone.
PROBE_SECONDS = 2.0


def _recorded_cluster() -> str | None:
    """The address ``ray start`` recorded on this node for ``ray.init()`` to find (in Ray's
    temp folder: ``$RAY_TMPDIR``, else ``$TMPDIR``, else /tmp, then ``ray/``), if any."""
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    record = Path(temp) / "ray" / "ray_current_cluster"
    try:
        return record.read_text().strip() or None
    except OSError:
        return None


def _accepts_connections(address: str) -> bool:
    """Whether something listens at ``host:port``: a record outlives a cluster that was
    stopped or crashed, and joining a dead one hangs for minutes."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_SECONDS):
            return True
    except (OSError, ValueError):
        return False


def cluster_address() -> str | None:
    """The cluster this process belongs to: ``RAY_ADDRESS`` (``local``: none), else the one
    ``ray start`` started on this node (as under ``ray submit``) while it still listens."""
    address = os.environ.get("RAY_ADDRESS", "")
    if address:
        return None if address == "local" else address
    recorded = _recorded_cluster()
    return recorded if recorded and _accepts_connections(recorded) else None


def start_local_ray(num_cpus: int | None = None) -> None:
    """A Ray of this machine only, on a loopback address (:data:`LOCAL_NODE_IP`)."""
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address=LOCAL_NODE_IP,
    )


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster this process belongs to (:func:`cluster_address`); otherwise start a
    local Ray (:func:`start_local_ray`)."""
    if ray.is_initialized():
        return
    address = cluster_address()
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        start_local_ray(num_cpus)


def check_gpu_requests(gpus: GpusPerTrial | None, cluster_gpus: float) -> None:
    """Refuse what would silently go wrong: trials on CPUs on a cluster with GPUs (Ray hides the
    GPUs from a trial that requests none) unless asked for, and trials waiting forever for GPUs
    on a local Ray that has none; say loudly when a cluster's trials wait for GPU nodes."""
    if gpus is None and cluster_gpus:
        raise ValueError(
            f"the cluster has {cluster_gpus:g} GPUs but the trials request none, so they would "
            "train on CPUs: pass --gpus-per-trial (e.g. 0.5, or rgpkd=0.5 for one method), or "
            "--gpus-per-trial 0 to train on CPUs on purpose"
        )
    requested = gpus or GpusPerTrial()
    if requested.any() and not cluster_gpus:
        if cluster_address() is None:
            raise ValueError(
                f"the trials request GPUs ({requested.describe()} each) but this machine has "
                "none: pass --gpus-per-trial 0 to train on CPUs"
            )
        log(
            f"WARNING: the trials request GPUs ({requested.describe()} each) but the cluster has "
            "none yet: they wait for the autoscaler to add GPU nodes"
        )
    elif cluster_gpus and not requested.any():
        log(f"WARNING: training on CPUs although the cluster has {cluster_gpus:g} GPUs")
