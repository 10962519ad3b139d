"""GPU shares pack trials onto GPUs as the presets say: on a Ray whose node declares a logical
GPU (no real one: the trials train on the CPU), a study of quarter-GPU trials runs four on it
at once and one of half-GPU trials two, through the study's own path (``run_ablation``, its
Tuner and its per-method resource requests). One GPU: every trial actor starts cold (a process
importing torch), and a second GPU would double them without testing more of the packing."""

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import ray
from conftest import TINY_CATEGORY, fresh_store

from pagmfr.config import Config
from pagmfr.models import AnomalyMethod, register_model
from pagmfr.study import StudyGrid, StudyOptions, run_ablation
from pagmfr.study.presets import GpusPerTrial
from pagmfr.study.ray_cluster import LOCAL_NODE_IP

#: The logical GPUs of the test's Ray.
GPUS = 1
#: How long a trial waits for the others of its batch, counted from the first one's arrival:
#: long enough for trial workers that start on 2 busy cores, bounded when packing is wrong.
BARRIER_SECONDS = 60.0


@dataclass
class ProbeSettings:
    """``gpu_probe.*``: where trials record themselves, and how many trials wait for each other
    (those the GPUs should hold at once)."""

    folder: str = ""
    together: int = 1


class GpuProbe(AnomalyMethod):
    """Training-free. Its fit records the GPU Ray gave the trial and holds the trial until
    ``together`` trials have arrived, so the trials Ray runs at once surely overlap, and
    trials that Ray holds back arrive after the others have left."""

    trains = False

    def __init__(self, config):
        super().__init__()
        self.settings = config.gpu_probe

    def prepare(self, clean_batches):
        folder = Path(self.settings.folder)
        me = uuid.uuid4().hex
        arrived = time.time()
        (folder / f"arrived-{me}").touch()
        while len(arrivals := list(folder.glob("arrived-*"))) < self.settings.together:
            if time.time() > min(p.stat().st_mtime for p in arrivals) + BARRIER_SECONDS:
                break
            time.sleep(0.05)
        record = {"gpus": [str(g) for g in ray.get_gpu_ids()], "ran": [arrived, time.time()]}
        (folder / f"{me}.json").write_text(json.dumps(record))

    def predict(self, images):
        maps = images.mean(dim=1, keepdim=True)
        return maps, maps.flatten(1).amax(1)


register_model("gpu_probe", GpuProbe, settings=ProbeSettings)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one instant (one that ends as another starts: not)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def ray_with_logical_gpus():
    """A local Ray on loopback whose one node declares :data:`GPUS` GPUs and 8 CPUs (logical:
    the trials' share of them is what Ray schedules by, not what the machine has)."""
    ray.init(
        address="local",
        num_cpus=8,
        num_gpus=GPUS,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address=LOCAL_NODE_IP,
    )
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("share", "per_gpu"), [(0.25, 4), (0.5, 2)])
def test_gpu_shares_pack_trials_side_by_side_on_each_gpu(
    ray_with_logical_gpus, tiny_dataset, tmp_path, share, per_gpu
):
    """One trial more than the GPUs hold: ``per_gpu`` run at once on each GPU, the last one
    after them (Ray holds it back rather than overfill a GPU)."""
    trials = per_gpu * GPUS + 1
    folder = tmp_path / "trials"
    folder.mkdir()
    base = Config().with_overrides(
        {
            "data.root": str(tiny_dataset),
            "data.image_size": 32,
            "train.batch_size": 4,
            "train.deterministic": True,
            "gpu_probe.folder": str(folder),
            "gpu_probe.together": per_gpu * GPUS,
        }
    )
    options = StudyOptions(
        name=f"gpu-packing-{per_gpu}",
        tracking_uri=fresh_store(tmp_path),
        storage_path=str(tmp_path / "runs"),
        cpus_per_trial=0.5,
        gpus_per_trial=GpusPerTrial(0.0, {"gpu_probe": share}),
    )
    grid = StudyGrid(base, {"probe": {"method": "gpu_probe"}}, [TINY_CATEGORY], list(range(trials)))
    summary = run_ablation(grid, options)
    assert (summary.trained, summary.failed) == (trials, [])

    records = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    assert len(records) == trials
    assert all(len(record["gpus"]) == 1 for record in records)  # a share of one GPU each
    by_gpu = {}
    for record in records:
        by_gpu.setdefault(record["gpus"][0], []).append(tuple(record["ran"]))
    assert len(by_gpu) == GPUS  # every GPU used
    assert {gpu: most_at_once(ran) for gpu, ran in by_gpu.items()} == dict.fromkeys(by_gpu, per_gpu)
    assert most_at_once([tuple(record["ran"]) for record in records]) == per_gpu * GPUS

    mlflow.set_tracking_uri(options.tracking_uri)
    cells = mlflow.search_runs(experiment_names=[options.name], filter_string="tags.role = 'cell'")
    assert set(cells["params.train.deterministic"]) == {"True"}  # every key is a cell's param
