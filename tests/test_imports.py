"""Import boundaries: the config, the report and a study's status load none of torch, Ray or
MLflow, so commands that only read settings or records start in a fraction of a second (each
checked in a fresh interpreter, as a command starts)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "mlflow")


@pytest.mark.parametrize("module", ["pagmfr.config", "pagmfr.report", "pagmfr.study.status"])
def test_light_modules_load_no_heavy_library(module):
    code = (
        f"import sys, {module}; print(' '.join(name for name in {HEAVY!r} if name in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stdout.split()
    assert not loaded, f"import {module} loads {', '.join(loaded)}"
