import hashlib

import numpy as np
import pytest

from pagmfr.cli import main
from pagmfr.data import make_synthetic_dataset, read_mask, read_rgb
from pagmfr.data.images import write_png


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_gives_byte_identical_files(tmp_path):
    kwargs = dict(
        categories=["brick", "coins"], image_size=48, n_train=3, n_test_good=2, n_test_per_defect=1
    )
    first = _digest(make_synthetic_dataset(tmp_path / "a", seed=7, **kwargs))
    assert first == _digest(make_synthetic_dataset(tmp_path / "b", seed=7, **kwargs))
    other = _digest(make_synthetic_dataset(tmp_path / "c", seed=8, **kwargs))
    assert first.keys() == other.keys() and first != other


@pytest.mark.parametrize("defect", ["contamination", "crack", "missing"])
def test_defect_masks_are_exact(synthetic_root, defect):
    """Pixels outside a mask equal the defect-free rendering; most inside it changed."""
    mask = read_mask(synthetic_root / "gravel" / "ground_truth" / defect / "000_mask.png")
    assert 4 <= mask.sum() < 0.2 * mask.size
    # Re-render a defect-free image of the same stream and compare against the defective one.
    from pagmfr.data.synthetic import SYNTHETIC_CATEGORIES, _rng
    from pagmfr.data.test_defects import TEST_DEFECT_TYPES, add_test_defect

    spec = SYNTHETIC_CATEGORIES["gravel"]
    rng = _rng(0, "gravel", 2 + TEST_DEFECT_TYPES.index(defect), 0)
    normal = spec.draw_normal(spec.photo(), rng, 128)
    defective, painted = add_test_defect(normal, defect, rng, spec.kind)
    assert np.array_equal(
        defective, read_rgb(synthetic_root / "gravel" / "test" / defect / "000.png")
    )
    assert np.array_equal(painted, mask)
    assert np.array_equal(defective[~mask], normal[~mask])
    assert np.any(defective != normal, axis=2)[mask].mean() >= 0.5


def test_test_defects_are_a_family_of_their_own():
    """No training or validation strategy is named like a test defect, and a flat image (which
    no defect can change) still gets its defect drawn, without hanging."""
    from pagmfr.anomalies import available_strategies
    from pagmfr.anomalies.defects import DEFECT_TYPES
    from pagmfr.data.test_defects import TEST_DEFECT_TYPES, add_test_defect

    assert not set(TEST_DEFECT_TYPES) & (set(available_strategies()) | set(DEFECT_TYPES))
    flat = np.zeros((64, 64, 3), np.uint8)
    _, mask = add_test_defect(flat, "crack", np.random.default_rng(0), "texture")
    assert mask.any()


def test_normal_images_vary(synthetic_root):
    a = read_rgb(synthetic_root / "coffee" / "train" / "good" / "000.png").astype(int)
    b = read_rgb(synthetic_root / "coffee" / "train" / "good" / "001.png").astype(int)
    assert np.abs(a - b).mean() > 3


def test_unknown_category_is_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown synthetic categories \['carpet'\]; available: brick"
    ):
        make_synthetic_dataset(tmp_path, categories=["carpet"])


def test_data_synth_and_check_commands(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "synth", str(root), "--categories", "brick", "--image-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "brick          train         48 images" in out and "no problems found" in out
    assert main(["data", "check", str(root)]) == 0
    assert "crack                        6 images, 6 masks" in capsys.readouterr().out


def test_data_check_lists_every_problem_and_fails(tmp_path, capsys):
    root = make_synthetic_dataset(
        tmp_path / "data",
        categories=["coins"],
        image_size=40,
        n_train=4,
        n_test_good=2,
        n_test_per_defect=2,
    )
    (root / "coins" / "ground_truth" / "missing" / "000_mask.png").unlink()
    (root / "coins" / "train" / "good" / "001.png").write_bytes(b"oops")
    write_png(root / "coins" / "ground_truth" / "crack" / "001_mask.png", np.ones((5, 5), bool))
    assert main(["data", "check", str(root), "--category", "coins", "missing_cat"]) == 1
    out = capsys.readouterr().out
    assert "4 problem(s):" in out
    assert "missing/000.png: defective test image has no mask" in out
    assert "train/good/001.png: not a readable image" in out
    assert "001_mask.png: mask is 5x5 but its image 001.png is 40x40" in out
    assert "category 'missing_cat' not found; categories here: coins" in out


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path), "--categories", "nope"]) == 2
    assert "pagmfr: error: unknown synthetic categories" in capsys.readouterr().err
