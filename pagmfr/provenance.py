"""What every run records so it can be reproduced: code version and environment."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import pagmfr


def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` when running from a git checkout."""
    root = Path(pagmfr.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return pagmfr.__version__
    return f"{pagmfr.__version__}+g{commit}{'.dirty' if dirty else ''}"


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
