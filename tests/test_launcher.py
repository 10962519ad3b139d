"""The README's cluster commands, run as written on cluster/local.yaml: `ray up`, `ray submit` of
the smoke ablation study, a worker node lost mid-study, the re-submit, `ray down`.

Two machines are simulated on this one, each an SSH server this test starts on its own loopback
address (the head on 127.0.0.3, the worker on 127.0.0.2, port 22) in its own PID and mount
namespaces (`unshare`):

- its own process table: the config's start commands run `ray stop`, which stops every Ray
  process it sees, and must not stop the other node's; each node gets its own raylet;
- its own home folder: an overlay on root's, whose changes (the synced repository, ~/.bashrc,
  ~/venv, the MLflow store) land in this test's folder; root's home is left as it is. The
  launcher logs in as root, with a key this test makes, through nothing but these servers.

A node starts as a machine image would: a Python environment at ~/venv that sees this
interpreter's packages (a venv with a .pth file and their command-line scripts), so
cluster/setup_node.sh links the synced repository and downloads nothing. This test process is
the user's laptop, with its own HOME (key, Ray token) and TMPDIR (Ray's cluster state).

The config is cluster/local.yaml with only the addresses, the user and the key replaced: its
file mounts, set-up and start commands are the ones users run. It has no container image. Ray's
token authentication is on, as the config sets it. Every process the test starts is ended by its
process id: a node's SSH server is its namespace's first process, and ending it ends the node.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HEAD, WORKER = "127.0.0.3", "127.0.0.2"
MLFLOW = "http://127.0.0.1:5000"  # the head's MLflow, on the head's loopback (same machine)
STUDY = "ablation-smoke"

#: Run by each node's base Python inside its namespaces before its SSH server starts: the
#: node's ~/.bashrc (its own temp folder: Ray's session and cluster state) and ~/venv.
PROVISION = r"""
import importlib.metadata, subprocess, sys
from pathlib import Path
tmp, site_dirs = sys.argv[1], sys.argv[2:]
home = Path.home()
(home / ".bash_profile").write_text("# a node of tests/test_launcher.py\n")
(home / ".bashrc").write_text(f"export TMPDIR={tmp}\n")
venv = home / "venv"
subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
site = next((venv / "lib").glob("python3*/site-packages"))
(site / "test-environment.pth").write_text("\n".join(site_dirs) + "\n")
for dist in importlib.metadata.distributions(path=site_dirs):
    for entry in dist.entry_points.select(group="console_scripts"):
        script = venv / "bin" / entry.name
        if not script.exists():
            module, _, attr = entry.value.partition(":")
            call = f"from {module} import {attr.split('.')[0]}\nsys.exit({attr}())"
            script.write_text(f"#!{venv}/bin/python\nimport sys\n{call}\n")
            script.chmod(0o755)
"""

# First the overlay home, then the node's image, then the SSH server as the namespace's init.
NODE_INIT = (
    'mount -t overlay overlay -o "lowerdir=/root,upperdir=$1/upper,workdir=$1/work" /root'
    ' && HOME=/root "$2" "$3" "$1/tmp" "${@:4}"'
    ' && exec /usr/sbin/sshd -D -e -f "$1/sshd_config"'
)


def _children(pid: int) -> dict[int, int]:
    """Every process below ``pid``: pid -> parent pid, read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    below, frontier = {}, {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier and p not in below}
        below.update({p: parents[p] for p in frontier})
    return below


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _is_ray(command: str) -> bool:
    """A Ray process: raylet, GCS, agents, dashboard, workers (``ray::...``), autoscaler."""
    return bool(re.search(r"^ray::|^ray-|/site-packages/ray/| -m ray\.", command))


@dataclass
class Node:
    """One simulated machine: an SSH server in its own namespaces."""

    name: str
    address: str
    folder: Path
    launcher: subprocess.Popen  # `unshare`, whose only child is the node's SSH server

    @property
    def init(self) -> int:
        """The SSH server: the first process of the node's namespaces."""
        children = Path(f"/proc/{self.launcher.pid}/task/{self.launcher.pid}/children")
        return int(children.read_text().split()[0])

    def ray_processes(self) -> dict[int, str]:
        """This node's Ray processes: pid -> command line."""
        commands = {pid: _command(pid) for pid in _children(self.init)}
        return {pid: command for pid, command in commands.items() if _is_ray(command)}

    def kill_ray(self) -> dict[int, str]:
        """Lose the node's Ray at once, as when a machine fails: SIGKILL to each process."""
        victims = self.ray_processes()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return victims

    def stop(self) -> None:
        """End the node: its SSH server first, and with it every process of its namespace."""
        if self.launcher.poll() is not None:
            return
        try:
            namespace = os.readlink(f"/proc/{self.init}/ns/pid")
            os.kill(self.init, signal.SIGKILL)
        except (OSError, IndexError, ValueError):  # its SSH server never started
            self.launcher.kill()
            self.launcher.wait(timeout=60)
            return
        self.launcher.wait(timeout=60)
        _wait(lambda: not _in_namespace(namespace), 60, f"the {self.name} node's processes to end")


def _in_namespace(namespace: str) -> list[int]:
    """The processes still in a PID namespace (``pid:[inode]``)."""
    found = []
    for link in Path("/proc").glob("[0-9]*/ns/pid"):
        with contextlib.suppress(OSError):
            if os.readlink(link) == namespace:
                found.append(int(link.parent.parent.name))
    return found


def _require_free(address: str, port: int, what: str) -> None:
    with socket.socket() as probe:
        if probe.connect_ex((address, port)) == 0:
            pytest.fail(f"{address}:{port} is taken ({what}): stop what listens there first")


def _start_node(name: str, address: str, base: Path) -> Node:
    folder = base / name
    for sub in ("upper", "work", "tmp"):
        (folder / sub).mkdir(parents=True)
    (folder / "sshd_config").write_text(
        f"ListenAddress {address}:22\n"
        f"HostKey {base / 'host_key'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\n"
        "AllowUsers root\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
    )
    site_dirs = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    command = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--", "bash", "-c"]
    command += [NODE_INIT, "bash", str(folder), sys._base_executable, str(base / "provision.py")]
    with open(folder / "sshd.log", "w") as log:  # the server keeps its own copy of the file
        node = Node(
            name, address, folder, subprocess.Popen(command + site_dirs, stdout=log, stderr=log)
        )
    deadline = time.time() + 120
    while True:
        with socket.socket() as probe:
            if probe.connect_ex((address, 22)) == 0:
                return node
        if node.launcher.poll() is not None or time.time() > deadline:
            node.stop()
            pytest.fail(f"the {name} node did not start: {(folder / 'sshd.log').read_text()}")
        time.sleep(0.2)


def derive_config(source: Path, key: Path) -> dict:
    """cluster/local.yaml with only the addresses, the user and the key replaced."""
    config = yaml.safe_load(source.read_text())
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(key)}
    return config


@dataclass
class Laptop:
    """The machine `ray up` runs on: this process, with its own home and temp folders."""

    folder: Path
    config: Path
    key: Path

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.folder),
            "TMPDIR": str(self.folder / "tmp"),
            "LANG": "C.UTF-8",
            # As the README says: Ray 2.60's default autoscaler (v2) starts no workers of a
            # `local` cluster launched from another machine; v1 does.
            "RAY_UP_enable_autoscaler_v2": "0",
        }

    def ray(self, *args: str, timeout: float = 600) -> str:
        """``ray ARGS`` from the repository root (the config's file mounts are relative to it):
        its output; it must succeed."""
        process = self.start_ray(*args)
        try:
            output, _ = process.communicate(timeout=timeout)
        finally:
            process.kill()
        assert process.returncode == 0, f"ray {' '.join(args)} failed:\n{output[-6000:]}"
        return output

    def ray_status(self, address: str, token: dict[str, str]) -> str:
        """``ray status`` of the cluster at ``address``, connecting straight to its GCS (over
        the network, not through SSH) with token authentication and ``token``."""
        env = {"RAY_AUTH_MODE": "token", **token}
        process = self.start_ray("status", "--address", address, env=env)
        return process.communicate(timeout=300)[0]

    def start_ray(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        command = [sys.executable, "-m", "ray.scripts.scripts", *args]
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**self.env(), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def end_ssh_connections(self) -> None:
        """The launcher's shared SSH connections (they linger 10 s): ended by process id."""
        for pid in _children(1):
            if str(self.key) in _command(pid) and "ControlMaster" in _command(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)


@pytest.fixture
def machines():
    if os.geteuid() != 0:
        pytest.skip("the launcher test starts SSH servers and namespaces: run it as root (CI)")
    for tool in ("sshd", "rsync", "unshare", "ssh-keygen"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            pytest.fail(f"{tool} is missing: apt-get install openssh-server rsync (see .ci/run)")
    for address, port, what in (
        (HEAD, 22, "the head's SSH"),
        (WORKER, 22, "the worker's SSH"),
        (HEAD, 6379, "the head's Ray"),
        ("127.0.0.1", 5000, "the head's MLflow"),
    ):
        _require_free(address, port, what)
    # A short path: Ray's sockets live in the nodes' temp folders, within AF_UNIX's 107 bytes.
    tmp_path = Path(tempfile.mkdtemp(prefix="launcher-", dir="/tmp"))
    laptop = tmp_path / "laptop"
    (laptop / "tmp").mkdir(parents=True)
    (laptop / ".ssh").mkdir()
    key = laptop / ".ssh" / "id_ed25519"
    for path in (key, tmp_path / "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    shutil.copy(f"{key}.pub", tmp_path / "authorized_keys")
    (tmp_path / "provision.py").write_text(PROVISION)
    (tmp_path / "shared").mkdir()  # the disk both nodes mount: the study's storage
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    config = laptop / "local.yaml"
    config.write_text(yaml.safe_dump(derive_config(ROOT / "cluster/local.yaml", key)))
    nodes = []
    try:
        nodes = [_start_node("head", HEAD, tmp_path), _start_node("worker", WORKER, tmp_path)]
        yield Laptop(laptop, config, key), *nodes
    finally:
        for node in nodes:
            node.stop()
        Laptop(laptop, config, key).end_ssh_connections()
        shutil.rmtree(tmp_path)


def _cell_runs() -> list:
    client = mlflow.tracking.MlflowClient(MLFLOW)
    experiment = client.get_experiment_by_name(STUDY)
    return client.search_runs([experiment.experiment_id], "tags.role = 'cell'")


def _wait(predicate, timeout: float, what: str, pause: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_the_config_is_cluster_local_yaml_with_addresses_user_and_key_replaced(tmp_path):
    source = yaml.safe_load((ROOT / "cluster/local.yaml").read_text())
    derived = derive_config(ROOT / "cluster/local.yaml", tmp_path / "key")
    for key in source.keys() - {"provider", "auth"}:
        assert derived[key] == source[key], key
    assert derived.keys() == source.keys() and "docker" not in derived
    assert derived["provider"] == {**source["provider"], "head_ip": HEAD, "worker_ips": [WORKER]}


@pytest.mark.slow
@pytest.mark.integration
def test_ray_up_submit_lose_a_worker_resubmit_down(machines):
    laptop, head, worker = machines
    config, shared = str(laptop.config), laptop.folder.parent / "shared"
    started = last = time.time()

    def step(name: str) -> None:
        """How long each step took: printed as it goes (pytest -s) and shown on failure."""
        nonlocal last
        print(f"launcher test: {name} in {time.time() - last:.0f} s", flush=True)
        last = time.time()

    # ---- up: the README's commands ----
    laptop.ray("get-auth-token", "--generate")
    (laptop.folder / ".ray" / "auth_token").chmod(0o600)
    laptop.ray("up", "-y", config)
    _wait(lambda: worker.ray_processes(), 300, "the head's autoscaler to start the worker's Ray")
    status = _wait(
        lambda: "2 local.cluster.node" in (s := laptop.ray("exec", config, "ray status")) and s,
        180,
        "two nodes in `ray status`",
        pause=2,
    )
    assert "0.0/4.0 CPU" in status  # 2 CPUs on each node
    for node in (head, worker):
        raylets = [c for c in node.ray_processes().values() if "/raylet " in c + " "]
        assert len(raylets) == 1 and f"--node_ip_address={node.address}" in raylets[0], raylets
    step("cluster up (head, then worker by the head's autoscaler; `ray status`: 2 nodes)")

    # ---- nobody else gets in: token authentication, MLflow on the head's loopback ----
    gcs = next(p for p, c in head.ray_processes().items() if "gcs_server" in c)
    environment = Path(f"/proc/{gcs}/environ").read_bytes().split(b"\0")
    assert b"RAY_AUTH_MODE=token" in environment
    token = (laptop.folder / ".ray" / "auth_token").read_text()
    assert (head.folder / "upper" / ".ray" / "auth_token").read_text() == token
    stranger = laptop.ray_status(f"{HEAD}:6379", {"RAY_AUTH_TOKEN": "not-the-token"})
    assert "Authentication token is missing or incorrect" in stranger, stranger[-3000:]
    token_path = str(laptop.folder / ".ray" / "auth_token")
    assert "2 local.cluster.node" in laptop.ray_status(
        f"{HEAD}:6379", {"RAY_AUTH_TOKEN_PATH": token_path}
    )
    mlflow_server = next(
        c for p, c in ((p, _command(p)) for p in _children(head.init)) if "mlflow server" in c
    )
    assert "--host 127.0.0.1 --port 5000" in mlflow_server
    step("token checked (a stranger refused, the laptop's token let in)")

    # ---- submit, and lose the worker mid-study ----
    study = ("submit", config, "studies/ablation.py", "--", "--preset", "smoke")
    # Six epochs, not smoke's two: the worker's trial must still be training when it is lost.
    study += ("--storage-path", f"{shared}/runs", "--set", "train.epochs=6")
    submit = laptop.start_ray(*study)
    running = _wait(
        lambda: any("ImplicitFunc.train" in c for c in worker.ray_processes().values()),
        600,
        "a trial on the worker node",
    )
    killed = worker.kill_ray()
    assert running and any("raylet" in c for c in killed.values())
    step(f"submitted; a trial started on the worker; killed its {len(killed)} Ray processes")
    output, _ = submit.communicate(timeout=900)
    assert submit.returncode == 0, output[-6000:]
    assert "study ablation-smoke: 4 cells, 0 already finished, 4 trained now, 0 failed" in output
    runs = _cell_runs()
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # none lost
    assert len({r.data.tags["cell_key"] for r in runs}) == 4  # no duplicates
    assert {(r.data.tags["variant"], r.data.tags["category"]) for r in runs} == {
        (v, c) for v in ("full model", "head: MLP on MFFM") for c in ("brick", "coins")
    }
    for run in runs:
        assert {
            "study",
            "method",
            "variant",
            "category",
            "seed",
            "cell_key",
        } <= run.data.tags.keys()
        assert run.data.tags["study"] == STUDY and run.data.tags["method"] == "pagmfr"
        assert "au_pro" in run.data.metrics
    recovered = [r for r in runs if "recovered" in r.data.tags]
    assert recovered, output[-6000:]  # the lost node's trial was retried
    step("study finished: 4 runs, none lost, no duplicates, the killed trial retried")

    # ---- the same command again trains nothing ----
    again = laptop.ray(*study)
    assert "4 cells, 4 already finished, 0 trained now, 0 failed" in again
    assert len(_cell_runs()) == 4
    step("re-submitted: nothing trained")

    # ---- down ----
    laptop.ray("down", "-y", config)
    _wait(lambda: not head.ray_processes(), 60, "`ray down` to stop the head's Ray")
    # The local provider's `ray down` runs `ray stop` on the head only: a worker's Ray exits by
    # itself once its head is gone (here, with the node the fixture ends).
    step(f"cluster down (the worker's Ray, {len(worker.ray_processes())} processes, exiting)")
    print(f"launcher test: {time.time() - started:.0f} s in all")
