#!/usr/bin/env bash
# The Debian packages the test suite needs, installed when missing: `make test` and CI's
# .ci/run both run this script, so the two cannot drift.
#
# - openssh-server and rsync: Ray's launcher reaches its nodes over SSH and syncs files with
#   rsync (tests/test_launcher.py starts its own sshd, on loopback only);
# - tmux: cluster/setup_node.sh would otherwise install it on the launcher test's nodes;
# - chromium: renders report.html and the MLflow UI;
# - texlive-latex-base and texlive-latex-recommended: pdflatex with booktabs and graphicx,
#   which compile every LaTeX table.
#
# As root it installs them with apt-get (quietly); otherwise it stops at once and prints the
# one command to run. Nothing happens when all of them are there.
set -euo pipefail

packages=()
command -v sshd >/dev/null || [[ -x /usr/sbin/sshd ]] || packages+=(openssh-server)
command -v rsync >/dev/null || packages+=(rsync)
command -v tmux >/dev/null || packages+=(tmux)
command -v chromium >/dev/null || packages+=(chromium)
command -v pdflatex >/dev/null || packages+=(texlive-latex-base)
kpsewhich booktabs.sty >/dev/null 2>&1 || packages+=(texlive-latex-recommended)
[[ ${#packages[@]} -eq 0 ]] && exit 0

command=(apt-get install -y --no-install-recommends "${packages[@]}")
if [[ $(id -u) -ne 0 ]]; then
    echo "The tests need Debian packages that are missing: ${packages[*]}. Install them with:" >&2
    echo "  sudo apt-get update && sudo ${command[*]}" >&2
    exit 1
fi
echo "installing the Debian packages the tests need: ${packages[*]}"
apt-get -qq update
DEBIAN_FRONTEND=noninteractive apt-get -qq "${command[@]:1}" >/dev/null
