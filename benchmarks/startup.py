"""Start-up speed: ``studies/ablation.py --help``, the first thing a user runs and the command
line every study parses before it starts Ray. Target: under 1 s on 2 CPUs. The baseline is
a bare interpreter's start (``python -c pass``), which no command can beat; the ratio is what
pagmfr's imports add to it.
Run: ``python benchmarks/startup.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_time  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(*arguments: str) -> None:
    """One fresh interpreter with ``arguments``, from the repository root and importing its
    pagmfr (not an installed copy: a script's folder, not the root, heads ``sys.path``); its
    output dropped."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    subprocess.run([sys.executable, *arguments], cwd=ROOT, env=env, check=True, capture_output=True)


def main() -> None:
    bare, _ = best_time(lambda: run("-c", "pass"))
    help_, _ = best_time(lambda: run("studies/ablation.py", "--help"))
    print(f"python -c pass (baseline)       {bare:6.2f} s")
    print(
        f"studies/ablation.py --help      {help_:6.2f} s   "
        f"({help_ / bare:.1f}x the baseline; target < 1 s)"
    )


if __name__ == "__main__":
    main()
