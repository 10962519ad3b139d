#!/usr/bin/env bash
# Installs pagmfr on a cluster node. The one node set-up, used by cluster/Dockerfile (the
# cluster image), the Ray launcher configs (cluster/config.yaml, cluster/local.yaml) and the
# launcher test (tests/test_launcher.py), so CI runs the install steps that users run.
#
#   cluster/setup_node.sh [--venv DIR] REPO
#
# 1. Debian/Ubuntu packages, only those missing: rsync and openssh-client (Ray's launcher syncs
#    files and reaches workers over SSH), git (the code version every run records), gcc and
#    the Python headers (the `noise` dependency builds from source), tmux (`ray submit --tmux`).
#    Installed with apt-get as root or through passwordless sudo; otherwise the script stops
#    and names them.
# 2. With --venv: a virtual environment at DIR (created when missing; Debian and Ubuntu refuse
#    pip installs into the system Python), activated in ~/.bashrc, so the launcher's login
#    shells (`ray start`, the study under `ray submit`) use it. Without: the current python3
#    (a container image's Python).
# 3. pip install -e "REPO[cluster]": editable, so the repository that `ray up` syncs is the code
#    that runs. Requirements already installed are kept (nothing is downloaded again).
set -euo pipefail

usage() { echo "usage: $0 [--venv DIR] REPO" >&2; exit 2; }
venv=""
while [[ $# -gt 1 ]]; do
    case "$1" in
        --venv) venv="$2"; shift 2 ;;
        *) usage ;;
    esac
done
[[ $# -eq 1 ]] || usage
repo="$(cd "$1" && pwd)"
[[ -f "$repo/pyproject.toml" ]] || { echo "setup_node: $repo is not the pagmfr repository" >&2; exit 2; }

# ---- 1. system packages ----
python=python3
[[ -n "$venv" && -x "$venv/bin/python" ]] && python="$venv/bin/python"
missing=()
command -v rsync >/dev/null || missing+=(rsync)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v git >/dev/null || missing+=(git)
command -v gcc >/dev/null || missing+=(gcc)
command -v tmux >/dev/null || missing+=(tmux)
"$python" -c 'import pathlib, sysconfig
raise SystemExit(not (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").is_file())' \
    || missing+=(python3-dev)
if [[ -n "$venv" && ! -x "$venv/bin/python" ]]; then
    python3 -c "import ensurepip" 2>/dev/null || missing+=(python3-venv)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -eq 0 ]]; then
        sudo=()
    elif sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "setup_node: missing ${missing[*]}; install them (apt-get install ${missing[*]})" \
             "or run this script as root" >&2
        exit 1
    fi
    "${sudo[@]}" apt-get -qq update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends \
        "${missing[@]}"
fi

# ---- 2. the Python environment ----
if [[ -n "$venv" ]]; then
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    python="$venv/bin/python"
    activate="source $venv/bin/activate"
    grep -qxF "$activate" ~/.bashrc 2>/dev/null || echo "$activate" >> ~/.bashrc
fi

# ---- 3. pagmfr ----
# Built without isolation, with the environment's setuptools (77 reads the SPDX license and
# builds wheels on its own; a newer one already installed is kept): an isolated build would
# download setuptools on every node, at every `ray up`.
"$python" -m pip install --quiet "setuptools>=77"
"$python" -m pip install --quiet --no-build-isolation -e "$repo[cluster]"
"$python" -c "import pagmfr, ray; print('pagmfr', pagmfr.__version__, 'with ray', ray.__version__)"
