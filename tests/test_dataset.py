import shutil

import cv2
import numpy as np
import pytest
import torch

from pagmfr.data import TEST_DEFECT_TYPES, DatasetError, MVTec3DRGB, MVTecAD, read_rgb
from pagmfr.data.cache import IMAGE_CACHE
from pagmfr.data.images import write_png


def test_train_split_holds_only_good_images(synthetic_root):
    train = MVTecAD(synthetic_root, "brick", "train", image_size=64)
    assert len(train) == 48
    assert train.defect_counts() == {"good": 48}
    assert train.labels.sum() == 0
    assert train.kind == "texture"


def test_test_split_items_are_consistent(synthetic_root):
    test = MVTecAD(synthetic_root, "coins", "test", image_size=(64, 80))
    assert test.kind == "object"
    assert test.defect_counts() == {**{d: 6 for d in TEST_DEFECT_TYPES}, "good": 10}
    for index in range(len(test)):
        item = test[index]
        assert item["image"].shape == (3, 64, 80) and item["image"].dtype == torch.float32
        assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
        assert item["mask"].shape == (1, 64, 80)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        has_defect = bool(item["mask"].sum() > 0)
        assert has_defect == (item["label"] == 1) == (item["defect"] != "good")
        assert item["path"].endswith(".png")


def test_images_are_decoded_once_per_process(synthetic_root):
    train = MVTecAD(synthetic_root, "gravel", "train", image_size=64)
    for _ in range(3):
        for index in range(len(train)):
            train[index]
    assert IMAGE_CACHE.misses == len(train)
    assert IMAGE_CACHE.hits == 2 * len(train)
    # A second dataset over the same files (the validation slice, say) reuses the cache.
    MVTecAD(synthetic_root, "gravel", "train", image_size=64)[0]
    assert IMAGE_CACHE.misses == len(train)


def test_cached_arrays_cannot_be_edited_in_place(synthetic_root):
    image, _ = MVTecAD(synthetic_root, "brick", "train", image_size=32).load_arrays(0)
    with pytest.raises(ValueError):
        image[0, 0, 0] = 1


def test_fingerprint_changes_with_the_bytes(tmp_path, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "brick", root / "brick")
    dataset = MVTecAD(root, "brick", "train", image_size=32)
    before = dataset.fingerprint()
    assert before == MVTecAD(root, "brick", "train", image_size=32).fingerprint()
    write_png(root / "brick" / "train" / "good" / "000.png", np.zeros((8, 8, 3), np.uint8))
    assert dataset.fingerprint() != before


def _write_raw(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_grey_rgba_and_16_bit_images_become_rgb_uint8(tmp_path):
    grey = np.full((6, 7), 100, np.uint8)
    _write_raw(tmp_path / "grey.png", grey)
    assert read_rgb(tmp_path / "grey.png").shape == (6, 7, 3)
    bgra = np.zeros((6, 7, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 200, 10  # red, nearly transparent
    _write_raw(tmp_path / "rgba.png", bgra)
    rgba = read_rgb(tmp_path / "rgba.png")
    assert rgba.shape == (6, 7, 3) and tuple(rgba[0, 0]) == (200, 0, 0)
    deep = np.full((6, 7, 3), 65535, np.uint16)
    deep[0, 0] = (0, 32896, 257)
    _write_raw(tmp_path / "deep.png", deep)
    rgb16 = read_rgb(tmp_path / "deep.png")
    assert rgb16.dtype == np.uint8 and rgb16[1, 1].tolist() == [255, 255, 255]
    assert rgb16[0, 0].tolist() == [1, 128, 0]  # BGR on disk -> RGB, 257 per step


def test_masks_are_resized_nearest_and_stay_binary(tmp_path):
    root = tmp_path / "data"
    image = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    mask[10:30, 40:90] = 255
    write_png(root / "part" / "train" / "good" / "a.png", image)
    write_png(root / "part" / "test" / "cut" / "a.png", image)
    write_png(root / "part" / "ground_truth" / "cut" / "a_mask.png", mask)
    item = MVTecAD(root, "part", "test", image_size=50)[0]
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["mask"].sum() == 10 * 25


def test_mvtec_3d_rgb_layout(tmp_path):
    image = np.full((20, 20, 3), 90, np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:9, 5:9] = 255
    cat = tmp_path / "bagel"
    write_png(cat / "train" / "good" / "rgb" / "000.png", image)
    write_png(cat / "validation" / "good" / "rgb" / "000.png", image)
    write_png(cat / "test" / "good" / "rgb" / "000.png", image)
    write_png(cat / "test" / "good" / "gt" / "000.png", np.zeros((20, 20), np.uint8))
    write_png(cat / "test" / "crack" / "rgb" / "000.png", image)
    write_png(cat / "test" / "crack" / "gt" / "000.png", mask)
    assert len(MVTec3DRGB(tmp_path, "bagel", "validation", image_size=16)) == 1
    test = MVTec3DRGB(tmp_path, "bagel", "test", image_size=20)
    assert test.defect_counts() == {"crack": 1, "good": 1}
    crack = next(test[i] for i in range(2) if test[i]["defect"] == "crack")
    assert crack["label"] == 1 and crack["mask"].sum() == 16
    # The default layout detection finds the 3D layout too.
    assert len(MVTecAD(tmp_path, "bagel", "train", image_size=16)) == 1


# ---- bad input: every error names the path and says what is expected ----


@pytest.fixture
def small_root(tmp_path, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "coins", root / "coins")
    return root


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: data root not found; expected the MVTec AD"):
        MVTecAD(tmp_path / "nowhere", "carpet")


def test_missing_category_lists_the_ones_that_exist(small_root):
    with pytest.raises(DatasetError, match=r"category 'carpet' not found; categories here: coins"):
        MVTecAD(small_root, "carpet")


def test_empty_train_good(small_root):
    shutil.rmtree(small_root / "coins" / "train" / "good")
    (small_root / "coins" / "train" / "good").mkdir()
    with pytest.raises(DatasetError, match=r"train/good: no training images"):
        MVTecAD(small_root, "coins", "train")


def test_defective_image_without_mask(small_root):
    (small_root / "coins" / "ground_truth" / "missing" / "002_mask.png").unlink()
    with pytest.raises(
        DatasetError,
        match=r"missing/002.png: defective test image has no mask; "
        r"expected .*ground_truth/missing/002_mask.png",
    ):
        MVTecAD(small_root, "coins", "test")


def test_mask_size_differs_from_image(small_root):
    write_png(
        small_root / "coins" / "ground_truth" / "missing" / "001_mask.png", np.ones((10, 12), bool)
    )
    test = MVTecAD(small_root, "coins", "test", image_size=32)
    index = next(
        i for i, s in enumerate(test.samples) if s.defect == "missing" and s.image.stem == "001"
    )
    with pytest.raises(
        DatasetError, match=r"001_mask.png: mask is 12x10 but its image 001.png is 128x128"
    ):
        test[index]


@pytest.mark.parametrize("content", [b"", b"not a png", "truncated"])
def test_unreadable_or_truncated_image(small_root, content):
    path = small_root / "coins" / "train" / "good" / "003.png"
    if content == "truncated":
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    train = MVTecAD(small_root, "coins", "train", image_size=32)
    with pytest.raises(ValueError, match=r"003.png: not a readable image"):
        train[3]


# ---- the check a run makes before work starts ----


def test_the_run_check_decodes_once_and_repeats_only_when_files_change(small_root, monkeypatch):
    from pagmfr.data import check as check_module

    calls = []
    check = check_module.check_dataset
    monkeypatch.setattr(
        check_module, "check_dataset", lambda *a, **k: calls.append(a) or check(*a, **k)
    )
    check_module.require_clean_data(small_root, ["coins"], image_size=32)
    misses = IMAGE_CACHE.misses
    for split in ("train", "test"):
        data = MVTecAD(small_root, "coins", split, image_size=32)
        for index in range(len(data)):
            data.load_arrays(index)
    assert IMAGE_CACHE.misses == misses  # training reads what the check decoded
    check_module.require_clean_data(small_root, ["coins"], image_size=32)
    assert len(calls) == 1
    broken = small_root / "coins" / "test" / "good" / "000.png"
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"test/good/000.png: not a readable image"):
        check_module.require_clean_data(small_root, ["coins"], image_size=32)
    assert len(calls) == 2
