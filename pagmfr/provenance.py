"""What every run records so it can be reproduced: code version, code fingerprint, environment.

Both are found from this file's own location, never from ``pagmfr.__file__`` (which is None when
a folder named ``pagmfr`` shadows the installed package as a namespace package).
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from functools import cache
from pathlib import Path

import torch

import pagmfr

#: The package's source folder.
PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def code_fingerprint() -> str:
    """A hash of the package's source files, names and bytes: what a result depends on. The
    same on every machine with the same code, with or without git (a cluster image, a wheel)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(PACKAGE_DIR.parent), *args],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    ).stdout.strip()


@cache
def code_version() -> str:
    """``<version>+g<commit>`` in a git checkout, ``.dirty.<fingerprint>`` appended when the
    package has uncommitted changes; ``<version>+src.<fingerprint>`` without git. Computed once
    per process: the code a process runs does not change under it."""
    try:
        # The package itself must be tracked: a copy installed in a venv inside some other
        # checkout would otherwise report that checkout's commit.
        _git("ls-files", "--error-unmatch", f"{PACKAGE_DIR.name}/__init__.py")
        commit = _git("rev-parse", "--short=12", "HEAD")
        changed = _git("status", "--porcelain", "--", PACKAGE_DIR.name)
    except (OSError, subprocess.SubprocessError):
        return f"{pagmfr.__version__}+src.{code_fingerprint()}"
    dirty = f".dirty.{code_fingerprint()}" if changed else ""
    return f"{pagmfr.__version__}+g{commit}{dirty}"


def environment() -> dict[str, str]:
    """Python, torch, platform and GPU: what a number was measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
