"""Image/pixel AUROC, AU-PRO (the MVTec AD definition) and F1-max: exact and cheap.

Inputs are numpy arrays or torch tensors (CPU or CUDA): anomaly maps (N, H, W) float with masks
(N, H, W) binary, or scores (N,) with labels (N,). Nothing here uses a fixed threshold grid:
every distinct score is a threshold. Speed comes from sorting only what each curve needs,
never from approximating it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, on any device
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return array


def _scores(value: Any, name: str) -> np.ndarray:
    scores = _as_array(value, name)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(
            f"{name} contain {int(bad.sum())} NaN or inf value(s); scores must be finite"
        )
    return scores


def _binary(value: Any, name: str) -> np.ndarray:
    labels = _as_array(value, name)
    if labels.dtype == bool:
        return labels
    values = np.unique(labels)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(str(v) for v in values[:6])
        raise ValueError(f"{name} must be binary (0/1 or bool); found values {shown}")
    return labels == 1


def _pair(scores: Any, labels: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    s, y = _scores(scores, names[0]), _binary(labels, names[1])
    if s.shape != y.shape:
        raise ValueError(f"shape mismatch: {names[0]} {s.shape} vs {names[1]} {y.shape}")
    return s, y


def _maps_and_masks(anomaly_maps: Any, gt_masks: Any) -> tuple[np.ndarray, np.ndarray]:
    maps, masks = _scores(anomaly_maps, "anomaly_maps"), _binary(gt_masks, "gt_masks")
    # Accept (N, 1, H, W) as produced by models and data loaders.
    maps = maps[:, 0] if maps.ndim == 4 and maps.shape[1] == 1 else maps
    masks = masks[:, 0] if masks.ndim == 4 and masks.shape[1] == 1 else masks
    if maps.ndim != 3:
        raise ValueError(f"anomaly_maps must be (N, H, W), got shape {maps.shape}")
    if maps.shape != masks.shape:
        raise ValueError(f"shape mismatch: anomaly_maps {maps.shape} vs gt_masks {masks.shape}")
    return maps, masks


def _require_both(n_positive: int, n_negative: int, unit: str) -> None:
    if n_positive == 0:
        raise ValueError(f"no defective {unit}: the metric needs at least one")
    if n_negative == 0:
        raise ValueError(f"no defect-free {unit}: the metric needs at least one")


def _count_at_least(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` (ascending) are >= each threshold."""
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def _auroc(positive: np.ndarray, negative: np.ndarray, unit: str) -> float:
    """Mann-Whitney form of the ROC area, ties counted half: equal to the trapezoidal ROC
    area, computed by searching the smaller set in the sorted larger one."""
    _require_both(positive.size, negative.size, unit)
    small, large, positive_is_small = (
        (positive, negative, True)
        if positive.size <= negative.size
        else (negative, positive, False)
    )
    large = np.sort(large)
    below = np.searchsorted(large, small, side="left").astype(np.int64)
    not_above = np.searchsorted(large, small, side="right").astype(np.int64)
    ties = int((not_above - below).sum())
    if positive_is_small:
        wins = int(below.sum())  # negatives strictly below each positive
    else:
        wins = int((large.size - not_above).sum())  # positives strictly above each negative
    return (wins + 0.5 * ties) / (positive.size * negative.size)


def image_auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of image scores (N,) against labels (N,) (1 = defective)."""
    s, y = _pair(scores, labels, ("scores", "labels"))
    if s.ndim != 1:
        raise ValueError(f"scores must be (N,), got shape {s.shape}")
    return _auroc(s[y], s[~y], "image")


def pixel_auroc(anomaly_maps: Any, gt_masks: Any) -> float:
    """Area under the ROC curve over all pixels of all images."""
    maps, masks = _maps_and_masks(anomaly_maps, gt_masks)
    return _auroc(maps[masks], maps[~masks], "pixel")


def f1_max(scores: Any, labels: Any) -> float:
    """The best F1 over every threshold; scores and labels of any equal shape (images or maps).

    The best threshold is always one of the defective scores (raising it to the next one only
    drops false positives), so only those are tried.
    """
    s, y = _pair(scores, labels, ("scores", "labels"))
    positive, negative = np.sort(s[y], axis=None), np.sort(s[~y], axis=None)
    if positive.size == 0:
        raise ValueError("no defective image or pixel: F1 needs at least one")
    thresholds = positive[np.r_[True, positive[1:] != positive[:-1]]]
    true_pos = _count_at_least(positive, thresholds)
    false_pos = _count_at_least(negative, thresholds)
    return float(np.max(2 * true_pos / (true_pos + false_pos + positive.size)))


def _region_ids(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """The region id (1..R) of every defective pixel, in ``masks[masks]`` order: regions are
    8-connected within an image, never across images. Labelled image by image, so no full-size
    label array is ever held."""
    ids, offset = [], 0
    for mask in masks:
        labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        ids.append(labels[mask] + offset)
        offset += count
    return np.concatenate(ids), offset


def _pro_curve(
    maps: np.ndarray, masks: np.ndarray, fpr_limit: float | None
) -> tuple[np.ndarray, np.ndarray]:
    region_of_pixel, n_regions = _region_ids(masks)
    negative = maps[~masks]
    _require_both(n_regions, negative.size, "pixel")
    n_negative = negative.size
    positive = maps[masks]
    # Each defective pixel adds 1 / (regions * its region's area) to PRO once scored >= t.
    areas = np.bincount(region_of_pixel, minlength=n_regions + 1)
    weights = 1.0 / (n_regions * areas[region_of_pixel].astype(np.float64))

    if fpr_limit is not None:
        # Only thresholds down to the first one whose FPR exceeds the limit matter: find that
        # score with a partition (linear time) and sort nothing below it.
        rank = min(int(np.floor(fpr_limit * n_negative)) + 1, n_negative)
        negative.partition(n_negative - rank)
        lowest = negative[n_negative - rank]
        negative = negative[negative >= lowest]
        keep = positive >= lowest
        positive, weights = positive[keep], weights[keep]
    negative.sort()
    order = np.argsort(positive, kind="stable")
    positive, weights = positive[order], weights[order]
    pro_at_least = np.append(np.cumsum(weights[::-1])[::-1], 0.0)  # by sorted positive index

    # Merge both sorted runs (a stable sort of two runs is a linear merge), then read every
    # distinct threshold's counts off cumulative sums: no per-threshold search.
    merged = np.concatenate([negative, positive])
    order = np.argsort(merged, kind="stable")
    merged = merged[order]
    count_type = np.int32 if merged.size < 2**31 else np.int64
    negatives_from = np.cumsum((order < negative.size)[::-1], dtype=count_type)[::-1]
    del order
    starts = np.flatnonzero(np.r_[True, merged[1:] != merged[:-1]])  # first index per value
    del merged
    false_pos = negatives_from[starts]
    del negatives_from
    # In place from here on: the curve has one point per distinct score and is the largest
    # thing this function holds.
    positives_below = starts
    positives_below -= negative.size
    positives_below += false_pos
    fpr = np.zeros(starts.size + 1)
    np.divide(false_pos[::-1], n_negative, out=fpr[1:])
    del false_pos
    pro = np.zeros(starts.size + 1)
    np.take(pro_at_least, positives_below[::-1], out=pro[1:])
    np.clip(pro, 0.0, 1.0, out=pro)
    return fpr, pro


def pro_curve(anomaly_maps: Any, gt_masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The whole PRO(FPR) curve, one point per distinct score, from (0, 0) to (1, 1)."""
    maps, masks = _maps_and_masks(anomaly_maps, gt_masks)
    return _pro_curve(maps, masks, None)


#: The FPR up to which AU-PRO integrates, as in the MVTec AD papers; every test records it.
AU_PRO_FPR_LIMIT = 0.3


def au_pro(anomaly_maps: Any, gt_masks: Any, fpr_limit: float = AU_PRO_FPR_LIMIT) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by it (Bergmann et al., IJCV 2021).

    Regions are the 8-connected components of the masks, pooled over all images; FPR counts all
    defect-free pixels (good images included); the curve is cut at the limit with linear
    interpolation and integrated with the trapezoid rule. The result lies in [0, 1].

    Args:
        anomaly_maps: (N, H, W) scores, numpy or torch; higher is more anomalous.
        gt_masks: (N, H, W) ground truth, bool or 0/1.
        fpr_limit: the false-positive rate the curve is integrated up to (0.3 in the paper).

    Returns:
        The normalised area, exact: every distinct score is a threshold.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    maps, masks = _maps_and_masks(anomaly_maps, gt_masks)
    fpr, pro = _pro_curve(maps, masks, fpr_limit)
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:inside], pro[:inside]
    if inside < fpr.size and x[-1] < fpr_limit:
        step = (fpr_limit - x[-1]) / (fpr[inside] - x[-1])
        x = np.append(x, fpr_limit)
        y = np.append(y, y[-1] + step * (pro[inside] - y[-1]))
    return float(np.clip(np.trapezoid(y, x) / fpr_limit, 0.0, 1.0))
