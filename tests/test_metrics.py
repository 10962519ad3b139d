import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from pagmfr.metrics import au_pro, f1_max, image_auroc, pixel_auroc, pro_curve

# ---- hand-computed cases, one per clause of the AU-PRO definition ----


def test_region_split_across_the_threshold_and_interpolation_at_the_limit():
    maps = np.array([[[0.9, 0.5, 0.7], [0.1, 0.2, 0.3]]])
    masks = np.array([[[1, 1, 0], [0, 0, 0]]])
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 0.25, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1, 1, 1, 1])
    # 0.5 * 0.25 up to FPR 0.25, then PRO 1 (interpolated between (0.25, 1) and (0.5, 1)).
    assert au_pro(maps, masks, fpr_limit=0.3) == pytest.approx((0.125 + 0.05) / 0.3)
    assert au_pro(maps, masks, fpr_limit=1.0) == pytest.approx(0.875)


def test_ties_between_defective_and_good_pixels_move_diagonally():
    maps, masks = np.array([[[0.5, 0.5]]]), np.array([[[1, 0]]])
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(pro, [0, 1])
    assert au_pro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5)
    assert au_pro(maps, masks, fpr_limit=0.3) == pytest.approx(0.5 * 0.3 * 0.3 / 0.3)


def test_good_images_contribute_false_positives():
    maps = np.array([[[0.8, 0.1]], [[0.9, 0.2]]])
    masks = np.array([[[1, 0]], [[0, 0]]])
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr[:3], [0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(pro[:3], [0, 0, 1])
    assert au_pro(maps, masks, fpr_limit=0.3) == 0.0
    assert au_pro(maps, masks, fpr_limit=0.5) == pytest.approx((0.5 - 1 / 3) / 0.5)


def test_regions_of_different_sizes_count_equally():
    maps = np.array([[[0.2, 0.1, 0.9, 0.8, 0.05], [0, 0, 0, 0, 0]]])
    masks = np.array([[[1, 0, 1, 1, 1], [0, 0, 0, 0, 0]]])
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0, 1 / 6, 1 / 6, 1])
    np.testing.assert_allclose(pro, [0, 1 / 6, 1 / 3, 5 / 6, 5 / 6, 1, 1])
    expected = (5 / 6 * 1 / 6 + (0.3 - 1 / 6)) / 0.3
    assert au_pro(maps, masks) == pytest.approx(expected)


def test_regions_are_8_connected():
    masks = np.zeros((1, 3, 3), int)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = 1  # one region with 8-connectivity
    maps = np.full((1, 3, 3), 0.5)
    maps[0, 0, 0], maps[0, 1, 1], maps[0, 1, 2] = 0.9, 0.1, 0.1
    assert au_pro(maps, masks, fpr_limit=1.0) == pytest.approx(1 / 3)  # 4-connected: 1/2


def test_regions_never_join_across_images():
    masks = np.zeros((2, 2, 2), int)
    masks[0, 1, 1] = 1  # area 1, scored high
    masks[1, 0, 0] = masks[1, 0, 1] = masks[1, 1, 0] = 1  # area 3, touches the first in 3-D
    maps = np.zeros((2, 2, 2))
    maps[0, 1, 1] = 1.0
    # Separate regions: PRO 1/2 at t = 1, area 0.75. One joined region would give PRO 1/4, 0.625.
    assert au_pro(maps, masks, fpr_limit=1.0) == pytest.approx(0.75)


def test_a_perfect_map_scores_one():
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 2:6, 3:9] = masks[1, 10:12, 10:15] = True
    maps = masks.astype(np.float32) + 0.01
    assert au_pro(maps, masks) == pytest.approx(1.0, abs=1e-12)
    assert pixel_auroc(maps, masks) == 1.0
    assert f1_max(maps, masks) == 1.0
    assert image_auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0


# ---- an independent, slow reference straight from the definition ----


def reference_au_pro(maps, masks, fpr_limit):
    """Every distinct threshold, each region measured directly; np.interp at the limit."""
    regions = [(i, region) for i, mask in enumerate(masks) for region in _regions_of(mask)]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        hit = maps >= t
        points.append((hit[~masks].mean(), np.mean([hit[i][r].mean() for i, r in regions])))
    fpr, pro = map(np.array, zip(*points, strict=True))
    inside = fpr <= fpr_limit
    x, y = list(fpr[inside]), list(pro[inside])
    first_out = np.argmax(~inside) if (~inside).any() else None
    if first_out is not None and x[-1] < fpr_limit:
        x.append(fpr_limit)
        y.append(
            np.interp(
                fpr_limit, fpr[first_out - 1 : first_out + 1], pro[first_out - 1 : first_out + 1]
            )
        )
    return np.trapezoid(y, x) / fpr_limit


def _regions_of(mask):
    labelled, n = ndimage.label(mask, np.ones((3, 3), bool))
    return [labelled == k for k in range(1, n + 1)]


@st.composite
def maps_and_masks(draw):
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 6))
    levels = draw(st.integers(2, 12))  # few levels: plenty of ties
    maps = np.array(draw(st.lists(st.integers(0, levels), min_size=n * h * w, max_size=n * h * w)))
    masks = np.array(draw(st.lists(st.booleans(), min_size=n * h * w, max_size=n * h * w)))
    masks = masks.reshape(n, h, w)
    if masks.all() or not masks.any():
        masks.flat[0] = not masks.flat[0]
    return maps.reshape(n, h, w).astype(np.float64), masks


@settings(max_examples=150, deadline=None)
@given(maps_and_masks(), st.sampled_from([0.05, 0.3, 0.5, 1.0]))
def test_au_pro_matches_the_reference_definition(data, fpr_limit):
    maps, masks = data
    assert au_pro(maps, masks, fpr_limit) == pytest.approx(
        reference_au_pro(maps, masks, fpr_limit), abs=1e-9
    )


@settings(max_examples=100, deadline=None)
@given(maps_and_masks())
def test_results_lie_in_unit_interval_and_ignore_monotone_transforms(data):
    maps, masks = data
    transformed = maps**3 + 5.0  # strictly increasing, exact on these small integers
    for metric in (au_pro, pixel_auroc, f1_max):
        value = metric(maps, masks)
        assert 0.0 <= value <= 1.0
        assert metric(transformed, masks) == pytest.approx(value, abs=1e-12)
    scores, labels = maps.reshape(len(maps), -1).max(1), masks.reshape(len(masks), -1).any(1)
    if labels.all() or not labels.any():
        return
    assert image_auroc(scores**3 + 5.0, labels) == pytest.approx(image_auroc(scores, labels))


@settings(max_examples=100, deadline=None)
@given(maps_and_masks())
def test_aurocs_agree_with_scikit_learn(data):
    maps, masks = data
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    flat_scores, flat_labels = maps.ravel(), masks.ravel()
    assert image_auroc(flat_scores, flat_labels) == pytest.approx(
        roc_auc_score(flat_labels, flat_scores)
    )


def test_f1_max_by_hand():
    # thresholds 0.9 -> P 1, R 1/3; 0.7 -> tp 2 fp 1: P 2/3 R 2/3; 0.2 -> tp 3 fp 2: P 3/5 R 1
    scores, labels = [0.9, 0.8, 0.7, 0.4, 0.2, 0.1], [1, 0, 1, 0, 1, 0]
    assert f1_max(scores, labels) == pytest.approx(max(2 / 4, 2 / 3, 6 / 8))


def test_torch_tensors_are_accepted():
    maps = torch.rand(2, 8, 8)
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, 2:4, 2:4] = 1
    assert au_pro(maps, masks) == pytest.approx(au_pro(maps.numpy(), masks[:, 0].numpy()))
    assert image_auroc(torch.tensor([0.2, 0.9]), torch.tensor([0, 1])) == 1.0


# ---- bad input ----


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: au_pro(np.zeros((2, 4, 4)), np.zeros((2, 4, 5))),
            r"shape mismatch: anomaly_maps \(2, 4, 4\) vs gt_masks \(2, 4, 5\)",
        ),
        (
            lambda: image_auroc([0.1, 0.2, 0.3], [0, 1]),
            r"shape mismatch: scores \(3,\) vs labels \(2,\)",
        ),
        (lambda: image_auroc([0.1, np.nan], [0, 1]), r"scores contain 1 NaN or inf"),
        (
            lambda: pixel_auroc(np.full((1, 2, 2), np.inf), np.eye(2)[None]),
            r"anomaly_maps contain 4 NaN or inf",
        ),
        (
            lambda: au_pro(np.zeros((1, 2, 2)), np.full((1, 2, 2), 0.5)),
            r"gt_masks must be binary .* found values 0.5",
        ),
        (lambda: image_auroc([0.1, 0.2], [2, 0]), r"labels must be binary"),
        (lambda: au_pro(np.zeros((1, 2, 2)), np.zeros((1, 2, 2))), r"no defective pixel"),
        (lambda: au_pro(np.zeros((1, 2, 2)), np.ones((1, 2, 2))), r"no defect-free pixel"),
        (lambda: pixel_auroc(np.zeros((1, 2, 2)), np.ones((1, 2, 2))), r"no defect-free pixel"),
        (lambda: image_auroc([0.1, 0.2], [0, 0]), r"no defective image"),
        (lambda: image_auroc([0.1, 0.2], [1, 1]), r"no defect-free image"),
        (lambda: f1_max([0.1, 0.2], [0, 0]), r"no defective image or pixel"),
        (lambda: au_pro(np.zeros((4, 4)), np.zeros((4, 4))), r"anomaly_maps must be \(N, H, W\)"),
        (
            lambda: au_pro(np.zeros((1, 2, 2)), np.eye(2)[None], fpr_limit=0),
            r"fpr_limit must be in \(0, 1\]",
        ),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_au_pro_peak_memory_is_a_few_times_the_maps():
    rng = np.random.default_rng(0)
    maps = rng.random((40, 128, 128), dtype=np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[::2, 30:60, 40:90] = True
    tracemalloc.start()
    au_pro(maps, masks)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= 4 * maps.nbytes, f"peak {peak / maps.nbytes:.1f}x the maps"
