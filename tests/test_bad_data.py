"""Hostile data, second campaign (issue 25): images no defect can change, the fewest training
images the check accepts, EXIF-turned photographs, test images copied into the training data
and a malformed cache size. Each case runs the real command or function on a tiny copy of the
embedded dataset (32 px) and ends promptly in the right result or a warning naming the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_CATEGORY
from PIL import Image, ImageOps

from pagmfr.anomalies import DEFECT_TYPES, add_defect, available_strategies, make_generator
from pagmfr.cli import main
from pagmfr.data import TEST_DEFECT_TYPES, read_mask, read_rgb
from pagmfr.data.cache import cache_budget_bytes
from pagmfr.data.check import MIN_TRAIN_IMAGES
from pagmfr.data.images import ImageReadError, write_png
from pagmfr.data.test_defects import add_test_defect
from pagmfr.models.memory import PatchMemory

CATEGORY = TINY_CATEGORY


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _check(root: Path, capsys) -> tuple[int, str]:
    return _run(["data", "check", str(root), "--category", CATEGORY], capsys)


def _train(root: Path, out: Path, capsys) -> tuple[int, str]:
    """One epoch at 32 px without pretrained weights (the patch memory on, as by default)."""
    argv = ["train", "--data", str(root), "--category", CATEGORY, "--image-size", "32"]
    argv += ["--epochs", "1", "--batch-size", "4", "--weights", "none", "--out", str(out)]
    return _run(argv, capsys)


def _folder(root: Path, *parts: str) -> Path:
    return root / CATEGORY / Path(*parts)


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging when the block runs longer than ``seconds``: SIGALRM interrupts
    the Python-level retry loops under test (pytest-timeout is not a dependency)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a retry loop that never ends")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---- 1. nothing hangs: images no defect can change ----

DEGENERATE = {
    "flat-grey": np.full((32, 32, 3), 128, np.uint8),
    "all-black": np.zeros((32, 32, 3), np.uint8),
    "tiny-grey": np.full((8, 8, 3), 128, np.uint8),
    "tiny-black": np.zeros((8, 8, 3), np.uint8),
}
#: Validation's defects and the embedded test set's, each with the function that paints it.
FAMILIES = [(add_defect, d) for d in DEFECT_TYPES]
FAMILIES += [(add_test_defect, d) for d in TEST_DEFECT_TYPES]


def _assert_visible(image: np.ndarray, out: np.ndarray, mask: np.ndarray) -> None:
    """The mask is honest: nothing outside it changed, at least half of it (and 4 px) did."""
    changed = np.any(out != image, axis=2)
    assert out.dtype == np.uint8 and out.shape == image.shape and mask.dtype == bool
    assert not changed[~mask].any()
    assert changed[mask].sum() >= max(4, 0.5 * mask.sum())


@pytest.mark.parametrize("name", DEGENERATE)
@pytest.mark.parametrize(("paint", "defect"), FAMILIES, ids=[d for _, d in FAMILIES])
def test_every_defect_family_paints_a_visible_defect_promptly(paint, defect, name):
    image = DEGENERATE[name]
    with deadline(5):
        for seed in range(5):
            for kind in ("texture", "object"):
                out, mask = paint(image, defect, np.random.default_rng(seed), kind)
                _assert_visible(image, out, mask)


@pytest.fixture(scope="module")
def generators() -> dict[tuple[str, str], object]:
    """Every strategy for both kinds, built (and their sources loaded) outside the deadline."""
    return {
        (strategy, kind): make_generator(strategy, kind, image_size=32, normal_probability=0.0)
        for strategy in available_strategies()
        for kind in ("texture", "object")
    }


@pytest.mark.parametrize("name", DEGENERATE)
@pytest.mark.parametrize("strategy", available_strategies())
def test_every_strategy_finishes_promptly_on_degenerate_images(generators, strategy, name):
    image = DEGENERATE[name]
    with deadline(5):
        for kind in ("texture", "object"):
            for seed in range(5):
                out, mask = generators[strategy, kind](image, rng=np.random.default_rng(seed))
                assert not np.any(out != image, axis=2)[~mask].any()
                assert mask.any() == (strategy != "none")


def test_training_on_flat_images_finishes_and_the_check_names_them(root, tmp_path, capsys):
    """The reported case: validation's swirl never changes a flat image, and training hung."""
    flat = sorted(_folder(root, "train", "good").glob("*.png"))
    for path in flat:
        write_png(path, np.full((32, 32, 3), 128, np.uint8))
    code, output = _check(root, capsys)
    assert code == 0
    for path in flat:
        assert f"{path}: constant image: every pixel is (128, 128, 128)" in output
    with deadline(60):
        code, output = _train(root, tmp_path / "run", capsys)
    assert code == 0, output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert math.isfinite(metrics["image_auroc"]) and math.isfinite(metrics["au_pro"])


# ---- 2. the fewest training images the check accepts train, with the patch memory on ----


def _keep_training_images(root: Path, count: int) -> Path:
    folder = _folder(root, "train", "good")
    for image in sorted(folder.glob("*.png"))[count:]:
        image.unlink()
    return folder


def test_the_fewest_training_images_the_check_accepts_train_to_finite_metrics(
    root, tmp_path, capsys
):
    _keep_training_images(root, MIN_TRAIN_IMAGES)
    assert _check(root, capsys)[0] == 0
    code, output = _train(root, tmp_path / "run", capsys)
    assert code == 0, output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert all(math.isfinite(metrics[k]) for k in ("image_auroc", "pixel_auroc", "au_pro"))


def test_one_fewer_is_refused_alike_by_the_check_and_by_training(root, tmp_path, capsys):
    folder = _keep_training_images(root, MIN_TRAIN_IMAGES - 1)
    message = f"{folder}: only {MIN_TRAIN_IMAGES - 1} training image(s); training holds out"
    code, output = _check(root, capsys)
    assert code == 1 and message in output and f"at least {MIN_TRAIN_IMAGES}" in output
    code, output = _train(root, tmp_path / "run", capsys)
    assert code == 2 and message in output and "loss is nan" not in output


def test_an_image_alone_in_the_patch_memory_gets_finite_distances():
    """A lone training image (or a coreset that kept only its patches) has no other image to
    be compared with: it falls back to its own entries instead of infinite distances."""
    torch.manual_seed(0)
    patches = torch.randn(2, 8, 4, 4)
    alone = PatchMemory()
    alone.fill(patches[0].flatten(1).T, torch.zeros(16, dtype=torch.long), 1.0, 0, 64.0)
    own = alone.distances(patches[:1], exclude=torch.tensor([0]))
    assert torch.isfinite(own).all() and torch.equal(own, alone.distances(patches[:1]))
    pair = PatchMemory()
    owners = torch.arange(2).repeat_interleave(16)
    pair.fill(patches.permute(0, 2, 3, 1).reshape(-1, 8), owners, 1.0, 0, 64.0)
    others = pair.distances(patches[:1], exclude=torch.tensor([0]))
    assert (others > 0).all()  # with another image in memory, its own patches stay excluded


# ---- 3. EXIF orientation: images and masks are read as viewers show them ----


def _save(path: Path, upright: np.ndarray, orientation: int, **options) -> Path:
    """Store ``upright`` turned the other way, with the EXIF tag that turns it back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = {1: upright, 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, **options)
    return path


def test_an_exif_turned_jpeg_and_its_turned_mask_line_up(root, capsys):
    """A 32x48 photograph stored sideways (48x32) with orientation 6, as phones save it."""
    folder = _folder(root, "test", "crack")
    original = folder / "000.png"
    upright = cv2.resize(read_rgb(original), (32, 48), interpolation=cv2.INTER_AREA)
    mask_path = _folder(root, "ground_truth", "crack", "000_mask.png")
    mask = cv2.resize(read_mask(mask_path).astype(np.uint8), (32, 48)) > 0
    original.unlink()
    image_path = _save(folder / "000.jpg", upright, 6, quality=100)
    _save(mask_path, mask.astype(np.uint8) * 255, 8)  # a mask turned the other way: same tag use
    read = read_rgb(image_path)
    assert read.shape == upright.shape and np.abs(read.astype(int) - upright).mean() < 3
    assert np.array_equal(read_mask(mask_path), mask)
    code, output = _check(root, capsys)
    assert code == 0 and "no problems found" in output, output
    assert f"{image_path}: EXIF orientation 6: read rotated 90 degrees clockwise" in output
    assert f"{mask_path}: EXIF orientation 8: read rotated 90 degrees anticlockwise" in output


def test_all_eight_orientations_read_as_pillow_shows_them(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"{orientation}.png"
        Image.fromarray(stored).save(path, exif=exif)
        with Image.open(path) as image:
            shown = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        assert np.array_equal(read_rgb(path), shown), orientation


def test_a_turned_tiff_is_refused_naming_it(tmp_path):
    path = _save(tmp_path / "turned.tif", np.zeros((4, 6, 3), np.uint8), 6)
    with pytest.raises(ImageReadError, match=re.escape(str(path)) + r": TIFF with orientation"):
        read_rgb(path)


# ---- 4. leakage: test images copied into the training data ----


def _copy_test_image(root: Path, transform=None) -> tuple[Path, Path]:
    """A test image copied into train/good (byte for byte, or through ``transform``)."""
    test = _folder(root, "test", "crack", "000.png")
    if transform is None:
        return test, Path(shutil.copy(test, _folder(root, "train", "good", "900.png")))
    copy = _folder(root, "train", "good", "901.jpg")
    cv2.imwrite(str(copy), transform(cv2.imread(str(test))))
    return test, copy


def _jpeg_at_quality_70(bgr: np.ndarray) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], 1)


@pytest.mark.parametrize(
    ("transform", "how"),
    [(None, "identical to"), (_jpeg_at_quality_70, "nearly identical to")],
    ids=["byte-copy", "jpeg-copy"],
)
def test_data_check_names_a_test_image_copied_into_training(root, capsys, transform, how):
    test, copy = _copy_test_image(root, transform)
    code, output = _check(root, capsys)
    assert code == 0, output
    assert f"{test}: test image {how} train image {copy}: " in output
    assert output.count(" identical to ") == 1  # no other pair: distinct images are not flagged


def test_a_clean_dataset_has_no_leakage_warning(root, capsys):
    assert " identical to " not in _check(root, capsys)[1]


def test_training_logs_the_leak_before_it_starts(root, tmp_path, capsys):
    test, copy = _copy_test_image(root)
    code, output = _train(root, tmp_path / "run", capsys)
    assert code == 0, output
    first = output.index(f"data warning: {test}: test image identical to train image {copy}")
    assert first < output.index("epoch    1")


# ---- 5. a malformed image cache size names the variable ----


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", ""])
def test_a_bad_cache_size_names_the_variable(value):
    with pytest.raises(ValueError, match=rf"PAGMFR_IMAGE_CACHE_MB='{value}' is not a size: set"):
        cache_budget_bytes(value)


def test_cache_sizes_in_mib():
    assert cache_budget_bytes(None) == 4096 * 2**20
    assert cache_budget_bytes("0") == 0 and cache_budget_bytes("1.5") == 3 * 2**19


def test_a_bad_cache_size_is_one_line_from_the_command(root):
    """The variable is read at import: the real command, in a process of its own."""
    env = {**os.environ, "PAGMFR_IMAGE_CACHE_MB": "abc"}
    argv = [sys.executable, "-m", "pagmfr", "data", "check", str(root)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        "pagmfr: error: PAGMFR_IMAGE_CACHE_MB='abc' is not a size: set it to a non-negative "
        "number of MiB (default 4096; 0 turns the image cache off) or unset it"
    ]
