"""Joining the Ray cluster a study belongs to, or starting a local one, and checking that
the trials' GPU requests fit it."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import ray
import yaml

from pagmfr.logs import log
from pagmfr.study.presets import GpusPerTrial

#: Where a local Ray binds: loopback, so nothing outside this machine reaches it, and not
#: 127.0.0.1, which Ray replaces with the machine's network address.
LOCAL_NODE_IP = "127.0.0.2"
#: How long a recorded cluster may take to accept a connection before it counts as gone.
PROBE_SECONDS = 2.0
#: Where Ray's cluster launcher (``ray up``) leaves its autoscaler's config: on the head node,
#: where ``ray submit`` runs a study (Ray Tune looks there too, to tell an autoscaling cluster).
LAUNCHER_CONFIG = "~/ray_bootstrap_config.yaml"


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
    GPUs from a trial that requests none) unless asked for, and trials that request GPUs where
    none can ever come (:func:`_check_gpus_can_come`)."""
    if gpus is None and cluster_gpus:
        raise ValueError(
            f"the cluster has {cluster_gpus:g} GPUs but the trials request none, so they would "
            "train on CPUs: pass --gpus-per-trial (e.g. 0.5, or rgpkd=0.5 for one method), or "
            "--gpus-per-trial 0 to train on CPUs on purpose"
        )
    requested = gpus or GpusPerTrial()
    if requested.any() and not cluster_gpus:
        _check_gpus_can_come(requested)
    elif cluster_gpus and not requested.any():
        log(f"WARNING: training on CPUs although the cluster has {cluster_gpus:g} GPUs")


def _check_gpus_can_come(requested: GpusPerTrial) -> None:
    """Trials request GPUs and the Ray this process joined has none (yet). They may wait only
    where an autoscaler can add GPU nodes (:func:`gpu_node_source`): a local Ray never gets
    any, nor does a cluster without such an autoscaler, where trials would wait forever."""
    address = cluster_address()
    if address is None:
        raise ValueError(
            f"the trials request GPUs ({requested.describe()} each) but this machine has "
            "none: pass --gpus-per-trial 0 to train on CPUs"
        )
    source = gpu_node_source()
    if source is None:
        raise ValueError(
            f"the trials request GPUs ({requested.describe()} each) but the cluster at "
            f"{address} has none, and no autoscaler that could add GPU nodes is in sight (no "
            f"node type with GPUs in {LAUNCHER_CONFIG}, no KubeRay autoscaler): start its GPU "
            "nodes and run the study once `ray status` lists their GPUs, run it on the head "
            "of an autoscaling cluster (ray submit), or pass --gpus-per-trial 0 to train on CPUs"
        )
    log(
        f"WARNING: the trials request GPUs ({requested.describe()} each) but the cluster has "
        f"none yet: they wait for {source} to add GPU nodes"
    )


def gpu_node_source() -> str | None:
    """What can add GPU nodes to the cluster, in words (None: nothing this node can see): the
    cluster launcher's autoscaler when its config (:data:`LAUNCHER_CONFIG`) has node types that
    may bring GPUs, or KubeRay's, whose node types this node cannot read."""
    types = _launcher_gpu_types(_launcher_config())
    if types:
        return f"the autoscaler (node types {', '.join(types)} in {LAUNCHER_CONFIG})"
    if "--no-monitor" in os.environ.get("KUBERAY_GEN_RAY_START_CMD", ""):
        return "KubeRay's autoscaler"  # KubeRay starts the head so when its autoscaler runs
    return None


def _launcher_config() -> dict[str, Any]:
    """The cluster launcher's config on this node; empty where there is none (not a launcher
    cluster's head) or it cannot be read (then its autoscaler cannot either)."""
    try:
        config = yaml.safe_load(Path(LAUNCHER_CONFIG).expanduser().read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _launcher_gpu_types(config: dict[str, Any]) -> list[str]:
    """Node types that may bring GPUs: those whose resources declare GPUs, and those that
    declare none (Ray detects them when the node starts, as on the launcher's local provider)."""
    types = config.get("available_node_types") or {}
    return [
        name
        for name, node in types.items()
        if not node.get("resources") or node["resources"].get("GPU", 0) > 0
    ]
