"""Cluster configs validated offline with Ray's own checks, and a study surviving failures on a
simulated multi-node cluster (ray.cluster_utils.Cluster: a 0-CPU head and worker nodes here)."""

import copy
import os
import signal
import time
from itertools import product
from pathlib import Path

import jsonschema
import mlflow
import pytest
import yaml
from conftest import fresh_store, smoke_study_command, start_driver
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER_CONFIGS = ["cluster/config.yaml", "cluster/local.yaml"]


def _load(name):
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_configs_pass_rays_schema_and_checks(name):
    config = prepare_config(copy.deepcopy(_load(name)))
    validate_config(config)


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_configs_share_the_node_setup_and_lock_the_cluster(name):
    config = _load(name)
    # Synced outside ~, where `ray submit` runs the script: no folder shadows the package.
    assert config["file_mounts"]["~/src/pagmfr"] == "."
    assert any(
        c.startswith("bash ~/src/pagmfr/cluster/setup_node.sh") for c in config["setup_commands"]
    )
    # Ray's token authentication, the documented way: the token file on every node and
    # RAY_AUTH_MODE=token in the login shells the launcher runs commands in.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any(
        "echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc" in c for c in config["setup_commands"]
    )
    head = config["head_start_ray_commands"]
    assert head[-1].startswith("bash ~/src/pagmfr/cluster/start_mlflow.sh")
    assert any(
        "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in c for c in config["head_setup_commands"]
    )


def test_mlflow_listens_on_the_heads_loopback_only():
    script = (ROOT / "cluster/start_mlflow.sh").read_text()
    assert "mlflow server --host 127.0.0.1 --port 5000" in script
    assert "MLFLOW_BACKEND_STORE_URI" in script and "mlflow.env" in script  # no password in args


def test_the_cluster_image_is_built_with_the_node_setup():
    dockerfile = (ROOT / "cluster/Dockerfile").read_text()
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))
    assert "devel" in base  # gcc and headers for `noise`
    assert "RUN bash /opt/pagmfr/cluster/setup_node.sh /opt/pagmfr" in dockerfile
    image = _load("cluster/config.yaml")["docker"]["image"]
    assert f"-t {image} ." in dockerfile  # the documented build makes the image the config runs
    kuberay = yaml.safe_load_all((ROOT / "cluster/kuberay/rayjob.yaml").read_text())
    images = {c["image"] for d in kuberay for c in _containers(d)}
    assert images == {image}


def _containers(document):
    """Every container of a Kubernetes document (RayJob head and workers, Deployment)."""
    if document["kind"] == "Deployment":
        return document["spec"]["template"]["spec"]["containers"]
    if document["kind"] != "RayJob":
        return []
    spec = document["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_the_cloud_config_has_a_cpu_head_and_autoscaling_gpu_workers():
    config = _load("cluster/config.yaml")
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = nodes["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] == 1


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (
            lambda c: c.__setitem__("setup_comands", c.pop("setup_commands")),
            "'setup_comands' was unexpected",
        ),
        (
            lambda c: c["available_node_types"]["gpu_worker"]["resources"].__setitem__("GPU", 0.5),
            "0.5 is not of type 'integer'",
        ),
        (
            lambda c: c["available_node_types"]["gpu_worker"].__setitem__("max_wokers", 4),
            "'max_wokers' was unexpected",
        ),
        (
            lambda c: c.__setitem__("head_node_type", "headd"),
            "must be one of `available_node_types`",
        ),
    ],
)
def test_a_broken_copy_fails_validation(break_it, message):
    config = _load("cluster/config.yaml")
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=message):
        validate_config(prepare_config(config))


def test_the_kuberay_job_runs_the_ablation_on_gpu_workers_behind_a_token():
    documents = list(yaml.safe_load_all((ROOT / "cluster/kuberay/rayjob.yaml").read_text()))
    job = next(d for d in documents if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1" and "studies/ablation.py" in job["spec"]["entrypoint"]
    assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = [
        c["resources"]["limits"]["nvidia.com/gpu"]
        for g in workers
        for c in g["template"]["spec"]["containers"]
    ]
    assert gpus and all(isinstance(g, int) and g >= 1 for g in gpus)
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["spec"]["type"] == "ClusterIP"  # MLflow is not exposed outside the cluster


def test_only_the_study_head_reaches_mlflow_on_kubernetes():
    documents = list(yaml.safe_load_all((ROOT / "cluster/kuberay/rayjob.yaml").read_text()))
    policy = next(d for d in documents if d["kind"] == "NetworkPolicy")
    mlflow_pods = next(d for d in documents if d["kind"] == "Deployment")["spec"]["selector"]
    assert policy["spec"]["podSelector"] == mlflow_pods and policy["spec"]["policyTypes"] == [
        "Ingress"
    ]
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    allowed = source["podSelector"]["matchLabels"]
    job = next(d for d in documents if d["kind"] == "RayJob")["spec"]["rayClusterSpec"]
    head_labels = job["headGroupSpec"]["template"]["metadata"]["labels"]
    worker_labels = [
        g["template"].get("metadata", {}).get("labels", {}) for g in job["workerGroupSpecs"]
    ]
    assert allowed.items() <= head_labels.items()
    assert not any(allowed.items() <= labels.items() for labels in worker_labels)


# ---- failures on a simulated multi-node cluster ----


#: Loopback addresses for the simulated nodes, one raylet each: the head, then the workers.
NODE_ADDRESSES = [f"127.0.0.{i}" for i in range(3, 8)]


def _add_worker(cluster):
    """A 1-CPU worker node on the next free loopback address."""
    taken = {node.node_ip_address for node in (cluster.head_node, *cluster.worker_nodes)}
    address = next(a for a in NODE_ADDRESSES if a not in taken)
    return cluster.add_node(num_cpus=1, node_ip_address=address, include_dashboard=False)


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    head = {"num_cpus": 0, "node_ip_address": NODE_ADDRESSES[0], "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    workers = [_add_worker(cluster) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def _study(tmp_path, name, uri, epochs=4, address=None, extra=()):
    env = {**os.environ}
    if address:
        env["RAY_ADDRESS"] = address
    command = smoke_study_command(
        name,
        uri,
        tmp_path / "runs",
        "--set",
        f"train.epochs={epochs}",
        "--max-failures",
        "3",
        *extra,
    )
    return start_driver(command, env)


def _runs(uri, name):
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=[name])
    except Exception:
        return None
    return runs[runs["tags.role"] == "cell"] if len(runs) else None


def _wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _epochs_logged(uri, name):
    runs = _runs(uri, name)
    return (
        runs is not None
        and "metrics.val_au_pro" in runs
        and runs["metrics.val_au_pro"].notna().any()
    )


def _finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def _test_metrics(uri, name, cells=4):
    runs = _runs(uri, name)
    assert (
        len(runs) == cells
        and runs["tags.cell_key"].is_unique
        and set(runs["status"]) == {"FINISHED"}
    )
    return {
        (r["tags.variant"], r["tags.category"]): tuple(
            r[f"metrics.{m}"] for m in ("image_auroc", "pixel_auroc", "au_pro")
        )
        for _, r in runs.iterrows()
    }


def _runs_a_trial(node) -> bool:
    """Whether a trial's worker process (title ``ray::ImplicitFunc``) is a child of the node's
    raylet: read from /proc, without connecting to the cluster."""
    raylet = node.all_processes["raylet"][0].process.pid
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
            command = (status.parent / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(raylet) and "ImplicitFunc" in command:
            return True
    return False


@pytest.mark.slow
@pytest.mark.integration
def test_killing_a_worker_node_mid_study_loses_nothing(cluster, tmp_path):
    cluster_, workers = cluster
    uri = fresh_store(tmp_path)
    driver = _study(tmp_path, "nodes", uri, epochs=6, address=cluster_.address)

    def both_trials_past_their_first_epoch():
        runs = _runs(uri, "nodes")
        if runs is None or "metrics.val_au_pro" not in runs:
            return False
        running = runs[runs["status"] == "RUNNING"]
        return (
            len(running) == 2
            and running["metrics.val_au_pro"].notna().all()
            and all(map(_runs_a_trial, workers))
        )

    _wait_for(both_trials_past_their_first_epoch, 240, "two trials past their first epoch")
    victim = workers[0]
    cluster_.remove_node(victim, allow_graceful=False)
    _add_worker(cluster_)  # the autoscaler's replacement
    output = _finish(driver)
    assert "4 trained now, 0 failed" in output
    resumed = _test_metrics(uri, "nodes")

    runs = _runs(uri, "nodes")
    recovered = (
        runs[runs.get("tags.recovered", "").notna()] if "tags.recovered" in runs else runs.iloc[0:0]
    )
    assert len(recovered) >= 1  # the killed node's trial was retried ...
    assert (recovered["metrics.resumed_from_epoch"] >= 1).all()  # ... from its last checkpoint

    # CPU determinism: the recovered cells end as if never interrupted (trained here again
    # alone: the others were not interrupted).
    variants, categories = set(recovered["tags.variant"]), set(recovered["tags.category"])
    only = ("--variants", *variants, "--categories", *categories)
    reference = _study(
        tmp_path / "reference", "reference", uri, epochs=6, address=cluster_.address, extra=only
    )
    _finish(reference)
    expected = {cell: resumed[cell] for cell in product(variants, categories)}
    assert _test_metrics(uri, "reference", cells=len(expected)) == expected


@pytest.mark.slow
@pytest.mark.integration
def test_an_mlflow_outage_delays_records_but_loses_none(tmp_path, monkeypatch, mlflow_server):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this test's own polling fails fast
    uri = mlflow_server.uri
    driver = _study(
        tmp_path,
        "outage",
        uri,
        epochs=6,
        extra=("--variants", "full model", "--categories", "brick"),
    )
    _wait_for(lambda: _epochs_logged(uri, "outage"), 240, "the first epochs")
    mlflow_server.kill()
    time.sleep(8)  # the study goes on without MLflow
    mlflow_server.start()  # same port, same store
    output = _finish(driver)
    assert "MLflow was unreachable" in output and "all delivered" in output
    runs = _runs(uri, "outage")
    assert list(runs["status"]) == ["FINISHED"] and runs["metrics.au_pro"].notna().all()
    history = mlflow.tracking.MlflowClient(uri).get_metric_history(
        runs.iloc[0]["run_id"], "val_au_pro"
    )
    assert sorted({m.step for m in history}) == list(range(6))  # every epoch recorded


@pytest.mark.slow
@pytest.mark.integration
def test_killing_the_driver_on_a_cluster_resumes_on_the_next_run(cluster, tmp_path):
    cluster_, _ = cluster
    uri = fresh_store(tmp_path)
    driver = _study(tmp_path, "driver", uri, address=cluster_.address)

    def one_finished():
        runs = _runs(uri, "driver")
        return runs is not None and "status" in runs and (runs["status"] == "FINISHED").any()

    _wait_for(one_finished, 300, "a finished cell")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    output = _finish(_study(tmp_path, "driver", uri, address=cluster_.address))
    assert "already finished" in output
    _test_metrics(uri, "driver")  # four cells, one finished run each
