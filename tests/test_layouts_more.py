"""VisA, MVTec AD 2 and plain folders (issue 24): each is detected, checked, trained and tested
on like MVTec AD. The fixtures rewrite a tiny embedded dataset (32 px) into each layout, as the
real datasets arrange their files; VisA's masks are 0/1, as its download stores them."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_CATEGORY

from pagmfr.categories import KINDS_FILE
from pagmfr.cli import main
from pagmfr.config import Config
from pagmfr.data import MVTecAD, Sample, list_categories, make_synthetic_dataset, read_mask
from pagmfr.data.dataset import cached_sample
from pagmfr.data.images import MVTEC_MASKS, NONZERO_MASKS, read_mask_file
from pagmfr.data.layout import detect_layout
from pagmfr.data.visa import COLUMNS, CSV
from pagmfr.engine.data import split_arrays, validation_images
from pagmfr.study.cells import data_fingerprint
from pagmfr.study.cli import ablation_main

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max")
#: The training images of the source; its defect-free test images follow them.
N_TRAIN = 8


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """One category at 32 px: 8 training, 2 defect-free and 3 defective test images."""
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("source"),
        categories=[TINY_CATEGORY],
        image_size=32,
        n_train=N_TRAIN,
        n_test_good=2,
        n_test_per_defect=1,
    )
    return root / TINY_CATEGORY


def _normal(source: Path) -> list[Path]:
    """The training images, then the defect-free test images."""
    return sorted((source / "train" / "good").glob("*.png")) + sorted(
        (source / "test" / "good").glob("*.png")
    )


def _defective(source: Path) -> list[tuple[str, Path, np.ndarray]]:
    """(a name unique across defect types, image, bool mask) per defective test image."""
    found = []
    for image in sorted((source / "test").glob("*/*.png")):
        defect = image.parent.name
        if defect != "good":
            mask = read_mask(source / "ground_truth" / defect / f"{image.stem}_mask.png")
            found.append((f"{defect}_{image.stem}", image, mask))
    return found


def _copy(image: Path, target: Path) -> str:
    """``image`` re-encoded as ``target``'s suffix says (VisA's .JPG); its path as given."""
    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), cv2.imread(str(image)))
    return str(target)


def _mask(mask: np.ndarray, target: Path, defective: int, depth: type = np.uint8) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), mask.astype(depth) * depth(defective))


def write_visa(source: Path, root: Path, defective: int = 1, depth: type = np.uint8) -> Path:
    """VisA's candle: Data/Images/{Normal,Anomaly}/*.JPG, masks of 0 and ``defective`` (of
    ``depth``: 8 or 16 bits) in Data/Masks/Anomaly, and split_csv/1cls.csv."""
    rows = []
    for index, image in enumerate(_normal(source)):
        relative = f"candle/Data/Images/Normal/{index:04d}.JPG"
        _copy(image, root / relative)
        rows.append(["candle", "train" if index < N_TRAIN else "test", "normal", relative, ""])
    for index, (_, image, mask) in enumerate(_defective(source)):
        relative = f"candle/Data/Images/Anomaly/{index:03d}.JPG"
        mask_relative = f"candle/Data/Masks/Anomaly/{index:03d}.png"
        _copy(image, root / relative)
        _mask(mask, root / mask_relative, defective, depth)
        rows.append(["candle", "test", "anomaly", relative, mask_relative])
    (root / CSV).parent.mkdir(parents=True)
    with (root / CSV).open("w", newline="") as file:
        csv.writer(file).writerows([COLUMNS, *rows])
    return root


def write_mvtec_ad2(source: Path, root: Path) -> Path:
    """MVTec AD 2's can: train/good, validation/good (the last 2 training images),
    test_public/{good,bad} with ground_truth/bad/<name>_mask.png, and a test_private set."""
    category = root / "can"
    normal = _normal(source)
    for index, image in enumerate(normal):
        split = "train" if index < N_TRAIN - 2 else "validation" if index < N_TRAIN else "test"
        folder = category / ("test_public" if split == "test" else split) / "good"
        _copy(image, folder / f"{index:03d}.png")
    for name, image, mask in _defective(source):
        _copy(image, category / "test_public" / "bad" / f"{name}.png")
        _mask(mask, category / "test_public" / "ground_truth" / "bad" / f"{name}_mask.png", 255)
        _copy(image, category / "test_private" / f"{name}.png")
    return root


def write_folder(source: Path, root: Path) -> Path:
    """A line of one's own: normal/ (every fifth a test image), abnormal/ and mask/."""
    category = root / "my_line"
    for index, image in enumerate(_normal(source)):
        _copy(image, category / "normal" / f"{index:03d}.png")
    for name, image, mask in _defective(source):
        _copy(image, category / "abnormal" / f"{name}.png")
        _mask(mask, category / "mask" / f"{name}.png", 255)
    return root


LAYOUTS = {
    "visa": (write_visa, "candle"),
    "mvtec_ad2": (write_mvtec_ad2, "can"),
    "folder": (write_folder, "my_line"),
}


@pytest.fixture(scope="module")
def datasets(source, tmp_path_factory) -> dict[str, Path]:
    """Each layout's data root (read-only: copy one to break it)."""
    return {
        name: write(source, tmp_path_factory.mktemp(name)) for name, (write, _) in LAYOUTS.items()
    }


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ---- detection and the data check ----

CHECKED = {
    "visa": (
        "candle: VisA layout, kind object (VisA's category)",
        "candle: masks hold 0, 1: any non-zero value is defective (0/1, 0/255 or class ids)",
        "candle: validation: data.val_fraction of the training images",
        "candle: split and labels from",
    ),
    "mvtec_ad2": (
        "can: MVTec AD 2 layout, kind object (MVTec AD 2's category)",
        "can: masks hold 0, 255: 0 normal, 255 defective",
        "can: validation: the 2 defect-free images of validation/good, held out by the dataset",
        "can: test_private: no ground truth, so neither trained nor tested on",
    ),
    "folder": (
        "my_line: plain folders layout, kind object (the default; declare another in",
        "my_line: masks hold 0, 255: any non-zero value is defective",
        "my_line: defect-free test images: every 5th of normal/ in name order (2 of 10;",
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_is_detected_and_checked_naming_how_it_is_read(datasets, capsys, layout):
    root, category = datasets[layout], LAYOUTS[layout][1]
    assert detect_layout(root / category) == layout
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 0 and "no problems found" in output, output
    for line in CHECKED[layout]:
        assert line in output, output
    train, test = (MVTecAD(root, category, split, 32) for split in ("train", "test"))
    assert test.defect_counts() == {"anomaly" if layout != "mvtec_ad2" else "bad": 3, "good": 2}
    assert len(train) == (6 if layout == "mvtec_ad2" else N_TRAIN)
    defective = [test[i]["mask"].sum() > 0 for i in range(len(test))]
    assert defective == [bool(label) for label in test.labels]


def test_visa_without_its_split_file_names_the_file(datasets, tmp_path, capsys):
    root = Path(shutil.copytree(datasets["visa"], tmp_path / "visa"))
    (root / CSV).unlink()
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1
    assert f"{root / CSV}: VisA's split file is missing" in output
    assert "restore split_csv/1cls.csv from the VisA download" in output


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_visa_split_file_without_rows_of_a_split_is_named(datasets, tmp_path, capsys, split):
    """A split file with no test rows passed the check, and training ran its whole schedule
    to end with "need at least one array to concatenate": the check names the file now."""
    root = Path(shutil.copytree(datasets["visa"], tmp_path / "visa"))
    lines = (root / CSV).read_text().splitlines()
    kept = [line for line in lines if f",{split}," not in line]
    (root / CSV).write_text("\n".join(kept) + "\n")
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1
    empty = f"no {split} rows for object 'candle': its {split} split is empty"
    assert f"{root / CSV}: {empty}" in output


def test_a_visa_mask_column_naming_an_image_is_named(datasets, tmp_path, capsys):
    """A row whose mask is a listed photograph was read as a mask under a lossy-mask warning,
    and pixel AUROC fell from 0.63 to 0.39: the check names the line and the file now."""
    root = Path(shutil.copytree(datasets["visa"], tmp_path / "visa"))
    with (root / CSV).open(newline="") as file:
        rows = list(csv.reader(file))
    photo = next(r[3] for r in rows[1:] if r[2] == "normal")
    line = next(i for i, r in enumerate(rows) if r[2] == "anomaly")
    rows[line][4] = photo
    with (root / CSV).open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1
    assert f"line {line + 1}: its mask {photo} is the image of line " in output, output


def test_a_visa_row_whose_image_is_missing_is_named(datasets, tmp_path, capsys):
    root = Path(shutil.copytree(datasets["visa"], tmp_path / "visa"))
    image = root / "candle" / "Data" / "Images" / "Anomaly" / "001.JPG"
    image.unlink()
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1 and f"{image}: listed in {CSV} line 13 but missing" in output


def test_plain_folders_without_masks_say_what_to_add(datasets, tmp_path, capsys):
    root = Path(shutil.copytree(datasets["folder"], tmp_path / "folder"))
    shutil.rmtree(root / "my_line" / "mask")
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1
    assert f"{root / 'my_line' / 'mask'}: missing mask folder: pixel metrics" in output


def test_a_normal_test_folder_chooses_the_defect_free_test_images(datasets, tmp_path):
    root = Path(shutil.copytree(datasets["folder"], tmp_path / "folder"))
    normal = sorted((root / "my_line" / "normal").iterdir())
    (root / "my_line" / "normal_test").mkdir()
    shutil.move(normal[3], root / "my_line" / "normal_test" / normal[3].name)
    assert len(MVTecAD(root, "my_line", "train", 32)) == 9
    test = MVTecAD(root, "my_line", "test", 32)
    assert [s.image.name for s in test.samples if s.label == 0] == [normal[3].name]


def _copy_root(datasets: dict[str, Path], layout: str, tmp_path: Path) -> Path:
    """A writable copy of one layout's data root."""
    return Path(shutil.copytree(datasets[layout], tmp_path / layout, symlinks=True))


def _append_rows(root: Path, *rows: list[str]) -> None:
    with (root / CSV).open("a", newline="") as file:
        csv.writer(file).writerows(rows)


def test_an_mvtec_ad_category_with_a_stray_normal_folder_is_still_mvtec_ad(source, tmp_path):
    root = tmp_path / "mvtec"
    category = Path(shutil.copytree(source, root / TINY_CATEGORY))
    _copy(_normal(source)[0], category / "normal" / "000.png")
    assert detect_layout(category) == "mvtec_ad"
    assert list_categories(root) == [TINY_CATEGORY]
    assert len(MVTecAD(root, TINY_CATEGORY, "train", 32)) == N_TRAIN


def test_a_visa_image_listed_twice_is_named_with_both_lines(datasets, tmp_path, capsys):
    """A training image listed again as a defective test image: refused, as the second row
    would otherwise be tested with the first row's (empty) mask from the image cache."""
    root = _copy_root(datasets, "visa", tmp_path)
    image, mask = "candle/Data/Images/Normal/0000.JPG", "candle/Data/Masks/Anomaly/000.png"
    _append_rows(root, ["candle", "test", "anomaly", image, mask])
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1
    assert f"{root / CSV}: lines 2 and 15 both list {image}: an image belongs in one row" in output


def test_the_image_cache_keeps_each_rows_own_mask(datasets):
    """Two samples of one image and different masks (or mask conventions) are cached apart."""
    root = datasets["visa"]
    image = root / "candle" / "Data" / "Images" / "Anomaly" / "000.JPG"
    mask = root / "candle" / "Data" / "Masks" / "Anomaly" / "000.png"
    rows = [
        Sample(image, None, 0, "good", NONZERO_MASKS),
        Sample(image, mask, 1, "anomaly", NONZERO_MASKS),
        Sample(image, mask, 1, "anomaly", MVTEC_MASKS),
    ]
    defective = [int(cached_sample(row, (32, 32))[1].sum()) for row in rows]
    assert defective[0] == defective[2] == 0 and defective[1] > 0  # 0/1 mask: empty for MVTec


def test_a_visa_path_that_links_out_of_the_root_is_refused(datasets, tmp_path, capsys):
    root = _copy_root(datasets, "visa", tmp_path)
    image = root / "candle" / "Data" / "Images" / "Normal" / "0001.JPG"
    outside = Path(shutil.move(image, tmp_path / "outside.JPG"))
    image.symlink_to(outside)
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1
    assert f"{image}: listed in {CSV} line 3, but a link leads it to {outside}, outside" in output


def test_plain_folders_problems_name_the_folder_or_both_masks(datasets, tmp_path, capsys):
    root = _copy_root(datasets, "folder", tmp_path)
    category = root / "my_line"
    (category / "normal_test").mkdir()
    mask = sorted((category / "mask").iterdir())[0]
    shutil.copy(mask, mask.with_name(f"{mask.stem}_mask.png"))
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1
    assert f"{category / 'normal_test'}: no defect-free test images" in output
    image = category / "abnormal" / mask.name
    assert f"{image}: two masks for {mask.stem}: {mask.name} and {mask.stem}_mask.png" in output
    assert "mask has no image" not in output


def test_built_in_kinds_apply_in_their_datasets_layout_only(datasets, tmp_path, capsys):
    """A plain-folder line named fabric is an object (MVTec AD 2's fabric is a texture) unless
    the kinds file says otherwise."""
    root = tmp_path / "mixed"
    shutil.copytree(datasets["folder"] / "my_line", root / "fabric")
    shutil.copytree(datasets["mvtec_ad2"] / "can", root / "rice")
    assert MVTecAD(root, "fabric", "train", 32).kind == "object"
    assert MVTecAD(root, "rice", "train", 32).kind == "texture"
    _, output = _run(["data", "check", str(root)], capsys)
    assert "fabric: plain folders layout, kind object (the default; declare another" in output
    assert "rice: MVTec AD 2 layout, kind texture (MVTec AD 2's category)" in output
    (root / KINDS_FILE).write_text(json.dumps({"fabric": "texture"}))
    assert MVTecAD(root, "fabric", "train", 32).kind == "texture"


# ---- VisA's masks: read as VisA defines them ----


def test_visa_masks_of_0_1_give_the_metrics_of_0_255(source, datasets, tmp_path, capsys):
    """A trained model's metrics, at the model's size and at full resolution: equal for the
    download's 0/1 masks and the same masks saved as 0/255."""
    scaled = write_visa(source, tmp_path / "visa-255", defective=255)
    checkpoint = tmp_path / "run" / "checkpoints"
    code, output = _run(_train(datasets["visa"], "candle", tmp_path / "run"), capsys)
    assert code == 0, output
    best = next(checkpoint.glob("*best*"))
    results = []
    for root in (datasets["visa"], scaled):
        for full in ([], ["--full-resolution"]):
            argv = ["evaluate", "--checkpoint", str(best), "--data", str(root), *full]
            code, output = _run([*argv, "--out", str(tmp_path / f"eval{len(results)}")], capsys)
            assert code == 0, output
            metrics = json.loads((tmp_path / f"eval{len(results)}" / "metrics.json").read_text())
            results.append([metrics[key] for key in METRICS])
    assert results[0] == results[2] and results[1] == results[3]
    assert 0 < results[0][1] < 1  # pixel AUROC: both mask kinds have defective pixels


def test_visa_16_bit_masks_of_0_1_give_the_pixels_of_8_bit_ones(source, datasets, tmp_path, capsys):
    """Class ids are tested as stored: a 16-bit 1 is not scaled to an 8-bit 0 first."""
    deep = write_visa(source, tmp_path / "visa-16", depth=np.uint16)
    mask = deep / "candle" / "Data" / "Masks" / "Anomaly" / "000.png"
    assert cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    code, output = _run(["data", "check", str(deep)], capsys)
    assert code == 0 and "candle: masks hold 0, 1: any non-zero value" in output, output
    masks = [
        split_arrays(MVTecAD(root, "candle", "test", 32))[0] for root in (deep, datasets["visa"])
    ]
    assert masks[0].any() and np.array_equal(*masks)


def test_a_jpeg_mask_of_non_zero_defects_is_read_from_half_its_brightest_value(tmp_path):
    """JPEG ringing (faint non-zero values around each edge) is not read as defects."""
    drawn = np.zeros((48, 48), np.uint8)
    drawn[10:30, 14:40] = 255
    path = tmp_path / "mask.jpg"
    cv2.imwrite(str(path), drawn, [cv2.IMWRITE_JPEG_QUALITY, 75])
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    mask, notes, _ = read_mask_file(path, NONZERO_MASKS)
    threshold = (int(stored.max()) + 1) // 2
    assert np.array_equal(mask, stored >= threshold) and (stored > 0).sum() > mask.sum()
    assert np.array_equal(mask, drawn > 0)
    assert f"read as defective from {threshold} up (half its brightest value" in notes[0]


# ---- training, and the validation images each layout uses ----


def _train(root: Path, category: str, out: Path) -> list[str]:
    """One epoch at 32 px without pretrained weights."""
    argv = ["train", "--data", str(root), "--category", category, "--image-size", "32"]
    argv += ["--epochs", "1", "--batch-size", "4", "--weights", "none", "--out", str(out)]
    return argv


VALIDATION = {
    "visa": "2 of the 8 training images, held out (data.val_fraction 0.2, train.seed 0)",
    "mvtec_ad2": "the 2 defect-free images of the dataset's validation split",
    "folder": "2 of the 8 training images, held out (data.val_fraction 0.2, train.seed 0)",
}


@pytest.fixture(scope="module")
def trained(datasets, tmp_path_factory) -> dict[str, tuple[Path, int, str]]:
    """Each layout's one-epoch run: its folder, exit code and output."""
    runs = {}
    for layout, root in datasets.items():
        out, printed = tmp_path_factory.mktemp(f"trained-{layout}"), io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            code = main(_train(root, LAYOUTS[layout][1], out))
        runs[layout] = out, code, printed.getvalue()
    return runs


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_one_epoch_trains_and_tests_on_each_layout(trained, layout):
    out, code, output = trained[layout]
    assert code == 0, output
    assert f"validation images: {VALIDATION[layout]}" in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation_images"] == VALIDATION[layout]
    assert metrics["test_images"] == 5 and all(0 <= metrics[k] <= 1 for k in METRICS)


def test_each_layouts_run_appears_in_a_report(trained, tmp_path, capsys):
    folders = [str(out) for out, _, _ in trained.values()]
    code, output = _run(["report", *folders, "--out", str(tmp_path), "--format", "md"], capsys)
    assert code == 0, output
    report = (tmp_path / "report.md").read_text()
    version = json.loads((next(iter(trained.values()))[0] / "metrics.json").read_text())
    assert f"Code: {version['code_version']} (3 runs)" in report
    table = report.split("### AU-PRO")[1]
    for layout, (out, _, _) in trained.items():
        category = LAYOUTS[layout][1].replace("_", "\\_")  # as Markdown escapes it
        au_pro = json.loads((out / "metrics.json").read_text())["au_pro"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {category} |"))
        assert f"{100 * au_pro:.1f}" in row, (category, row)


def test_mvtec_ad2_holds_out_training_images_when_asked(datasets):
    root = datasets["mvtec_ad2"]
    config = Config().with_overrides(
        {"data.root": str(root), "data.category": "can", "data.image_size": 32}
    )
    train = MVTecAD(root, "can", "train", 32)
    own = validation_images(config, root, train)
    assert own.data.split == "validation" and own.train_indices == list(range(6))
    asked = config.with_overrides({"data.validation_images": "from_train"})
    held_out = validation_images(asked, root, train)
    assert held_out.data is train and len(held_out.indices) == 2
    assert sorted(held_out.indices + held_out.train_indices) == list(range(6))


def test_mvtec_ad2_needs_fewer_training_images_as_none_is_held_out(datasets, tmp_path, capsys):
    root = _copy_root(datasets, "mvtec_ad2", tmp_path)
    train = sorted((root / "can" / "train" / "good").iterdir())
    for image in train[3:]:
        image.unlink()
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 0, output
    for image in train[1:3]:
        image.unlink()
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 1
    message = "only 1 training image(s); training needs at least 2 (validation uses validation"
    assert f"{root / 'can' / 'train' / 'good'}: {message}" in output


def test_mvtec_ad2_validation_images_copied_from_training_are_named(datasets, tmp_path, capsys):
    root = _copy_root(datasets, "mvtec_ad2", tmp_path)
    trained = root / "can" / "train" / "good" / "001.png"
    copy = Path(shutil.copy(trained, root / "can" / "validation" / "good" / "copy.png"))
    code, output = _run(["data", "check", str(root)], capsys)
    assert code == 0
    assert f"{copy}: validation image identical to train image {trained}: validation then" in output


# ---- a study grid on each layout ----


@pytest.fixture(scope="module")
def ablation_study():
    spec = importlib.util.spec_from_file_location(
        "ablation_study", ROOT / "studies" / "ablation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_study_dry_run_reads_each_layout(datasets, ablation_study, capsys, layout):
    root, category = datasets[layout], LAYOUTS[layout][1]
    argv = ["--preset", "paper", "--data", str(root), "--categories", category, "--seeds", "0"]
    argv += ["--variants", "full-model", "--dry-run"]
    code = ablation_main(ablation_study.VARIANTS, ablation_study.PRESETS, "", argv)
    output = capsys.readouterr().out
    assert code == 0 and "1 cells: 1 variants x 1 categories x 1 seeds" in output, output
    assert f"full model / {category} / seed 0" in output
    assert not data_fingerprint(str(root), category).startswith("unreadable")


def test_mvtec_ad2_validation_images_are_part_of_a_cells_data(datasets, tmp_path):
    """They choose the tested epoch: a changed validation image changes the cell's data
    fingerprint (and with it the cell key)."""
    root = tmp_path / "ad2"
    shutil.copytree(datasets["mvtec_ad2"], root)
    before = data_fingerprint(str(root), "can")
    validation = sorted((root / "can" / "validation" / "good").iterdir())
    shutil.copyfile(validation[1], validation[0])
    data_fingerprint.cache_clear()
    assert data_fingerprint(str(root), "can") != before
