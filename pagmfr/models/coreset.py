"""Greedy k-centre coreset selection (PatchCore's memory-bank subsampling), exact and fast.

The plain algorithm keeps, for every point, its distance to the nearest chosen centre
(``torch.linalg.norm(features - centre, dim=1)`` then ``torch.minimum``) and picks the point
with the largest such distance next: one full pass over all N points per chosen centre.

:func:`greedy_coreset` returns the same indices, in the same order, with the same float32
distance values, but on CPU it skips almost every point of almost every pass. A point's
distance is recomputed only when a lower bound on its distance to the new centre does not
already prove that its nearest-centre distance cannot shrink. The bounds come from a few
principal coordinates of the features (an orthogonal projection never lengthens a vector)
and from bounding boxes of the leaves of a k-d tree over those coordinates, each leaf also
holding the largest nearest-centre distance of its points. Every bound is widened by the
float32 rounding of the distance it stands in for, so a skipped point is one whose plain
float32 distance is provably not smaller than its current minimum: nothing is approximated.
Points that are recomputed use the plain algorithm's float32 kernel, row by row, so their
values are bit-identical; ties at the maximum go to the smallest index, as ``torch.max`` does.

Small-array bookkeeping runs in NumPy (several times cheaper per call than torch on arrays of
a few thousand elements); the distance kernel is torch's. On other devices the plain
algorithm runs with preallocated buffers (one pass per centre is cheap there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PRINCIPAL_DIMS = 16  # coordinates used by the point-level lower bound
TREE_DIMS = 8  # of those, the ones the k-d tree splits on
LEAF_SIZE = 32
_PADDING = -1.0  # nearest-centre distance of padding slots: never the maximum
_TINY = 1e-15  # below this, float32 squares may be subnormal: such bounds prove nothing
_FLOAT32_BYTES = 4


def random_projection(features: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Features (N, D) projected to ``dim`` dimensions by a seeded Gaussian matrix scaled by
    1/sqrt(dim), which preserves distances in expectation (Johnson-Lindenstrauss)."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], dim, generator=generator) / dim**0.5
    return features @ matrix.to(device=features.device, dtype=features.dtype)


def start_index(total: int, seed: int) -> int:
    """The seeded random first centre."""
    return int(torch.randint(total, (1,), generator=torch.Generator().manual_seed(seed)))


def greedy_coreset(
    features: torch.Tensor, count: int, seed: int = 0, start: int | None = None
) -> torch.Tensor:
    """Indices (count,) of a greedy k-centre coreset of ``features`` (N, D), in selection
    order: ``start`` (or a point drawn with ``seed``), then each time the point farthest from
    all chosen ones. Identical to the plain algorithm's indices on the same features."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) matrix, got {tuple(features.shape)}")
    if features.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"features must be float32 or float64, got {features.dtype}")
    total = features.shape[0]
    if not 0 <= count <= total:
        raise ValueError(f"count must be in [0, {total}], got {count}")
    start = start_index(total, seed) if start is None else int(start)
    if not 0 <= start < total:
        raise ValueError(f"start must be in [0, {total}), got {start}")
    if count == 0:
        return torch.zeros(0, dtype=torch.long)
    features = features.detach().contiguous()
    if features.device.type != "cpu":
        return _plain_greedy(features, count, start).cpu()
    return torch.from_numpy(_pruned_greedy(features, count, start))


def bounded_coreset(
    features: torch.Tensor,
    ratio: float,
    max_mb: float,
    seed: int,
    projection_dim: int | None = None,
    bound_name: str = "max_bank_mb",
) -> torch.Tensor:
    """Indices of a memory bank among ``features`` (N, D): a greedy coreset of ``ratio`` of
    them (in greedy order), cut to what ``max_mb`` of float32 entries holds, selected on a
    random projection to ``projection_dim`` dimensions when that is smaller than D; every
    index, in order, when the bank keeps them all. ``bound_name`` names ``max_mb`` in the error
    when it cannot hold a single entry."""
    total, dim = features.shape
    fit = int(max_mb * 2**20 // (dim * _FLOAT32_BYTES))
    if fit < 1:
        raise ValueError(f"{bound_name}={max_mb} cannot hold one {dim}-dimensional feature")
    count = min(max(1, int(total * ratio)), fit)
    if count == total:
        return torch.arange(total, device=features.device)
    selection = features
    if projection_dim is not None and projection_dim < dim:
        selection = random_projection(features, projection_dim, seed)
    return greedy_coreset(selection.cpu(), count, seed).to(features.device)


def _kernel(rows: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """The plain algorithm's distance kernel; each row's value depends on that row alone
    (pinned by a test), so computing a subset gives the same bits as the full pass."""
    return torch.linalg.vector_norm(rows - centre, dim=1)


def _plain_greedy(features: torch.Tensor, count: int, start: int) -> torch.Tensor:
    """One full pass per centre, in place (for devices where that is cheap)."""
    chosen = torch.empty(count, dtype=torch.long, device=features.device)
    chosen[0] = start
    nearest = _kernel(features, features[start])
    for k in range(1, count):
        chosen[k] = torch.argmax(nearest)
        torch.minimum(nearest, _kernel(features, features[chosen[k]]), out=nearest)
    return chosen


@dataclass
class _Layout:
    """The features regrouped by k-d tree leaf (``leaves`` slots of ``LEAF_SIZE``; the last
    leaf padded), with what the lower bounds need."""

    slots: np.ndarray  # (S,) original index per slot; padding slots hold N
    rows: torch.Tensor  # (S, D) features per slot (padding rows are zero)
    coords: np.ndarray  # (leaves, LEAF_SIZE, r) float32 principal coordinates
    box_low: np.ndarray  # (leaves, t) bounding boxes of the leaves' first t coordinates
    box_high: np.ndarray
    shrink: float  # a computed coordinate distance times shrink, minus slack, is a bound
    slack: float


def _principal_coordinates(features: torch.Tensor, dims: int) -> tuple[np.ndarray, float]:
    """Coordinates (N, dims) of the centred features on their leading principal axes (an
    orthonormal basis: the coordinate distance never exceeds the feature distance), and the
    largest coordinate-vector norm (for the rounding slack of their float32 copy)."""
    centred = features.to(torch.float64, copy=True)
    centred -= centred.mean(0)
    sample = centred[:: max(1, len(centred) // 4096)]
    basis = torch.linalg.eigh(sample.T @ sample).eigenvectors[:, -dims:].flip(1)
    coords = centred @ basis
    return coords.float().numpy(), float(torch.linalg.vector_norm(coords, dim=1).max())


def _kd_order(points: np.ndarray, leaf: int) -> np.ndarray:
    """A permutation grouping the points into k-d tree leaves of ``leaf`` points (the last
    may be short): median splits on the widest coordinate, so leaves are compact boxes."""
    order, stack = [], [np.arange(len(points))]
    while stack:
        index = stack.pop()
        if index.size <= leaf:
            order.append(index)
            continue
        sub = points[index]
        axis = int(np.argmax(sub.max(0) - sub.min(0)))
        left = leaf * _ceil_div(_ceil_div(index.size, leaf), 2)  # whole leaves on the left
        part = np.argpartition(sub[:, axis], left - 1)
        stack += [index[part[left:]], index[part[:left]]]
    return np.concatenate(order)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _layout(features: torch.Tensor) -> _Layout:
    total, dim = features.shape
    coords, radius = _principal_coordinates(features, min(PRINCIPAL_DIMS, dim))
    r = coords.shape[1]
    t = min(TREE_DIMS, r)
    leaves = _ceil_div(total, LEAF_SIZE)
    slots = np.concatenate(
        [_kd_order(coords[:, :t], LEAF_SIZE), np.full(leaves * LEAF_SIZE - total, total)]
    )
    padded = np.concatenate([coords, np.zeros((1, r), np.float32)])[slots]
    grouped = padded.reshape(leaves, LEAF_SIZE, r)
    rows = torch.cat([features, features.new_zeros(1, dim)])[torch.from_numpy(slots)]
    # float32 storage moves each coordinate vector by <= 2^-24 of its norm, and the float32
    # distance of two of them is within (r + 2) 2^-24 of exact: doubled for safety.
    return _Layout(
        slots=slots,
        rows=rows,
        coords=grouped,
        box_low=grouped[..., :t].min(1).astype(np.float64),
        box_high=grouped[..., :t].max(1).astype(np.float64),
        shrink=1 - (r + 8) * 2.0**-23,
        slack=2.0**-21 * radius + _TINY,
    )


def _growth(features: torch.Tensor) -> float:
    """A bound that is at least ``growth`` times a point's current minimum distance proves
    that the plain float32 distance is not below it: the kernel's relative rounding error is
    about (D / 2 + 2) eps; 2 (D + 10) eps is used, twice over."""
    eps = torch.finfo(features.dtype).eps / 2
    return 1 + 4 * (features.shape[1] + 10) * eps


def _pruned_greedy(features: torch.Tensor, count: int, start: int) -> np.ndarray:
    layout = _layout(features)
    total, leaves = features.shape[0], layout.coords.shape[0]
    growth, t = _growth(features), layout.box_low.shape[1]
    nearest = _kernel(layout.rows, features[start]).numpy().copy()
    nearest[layout.slots == total] = _PADDING
    by_leaf = nearest.reshape(leaves, LEAF_SIZE)
    leaf_max = by_leaf.max(1)
    original = np.where(layout.slots == total, np.iinfo(np.int64).max, layout.slots)
    original = original.reshape(leaves, LEAF_SIZE)
    slot_of = np.arange(leaves * LEAF_SIZE).reshape(leaves, LEAF_SIZE)
    flat_coords = layout.coords.reshape(-1, layout.coords.shape[2])
    buffer = torch.empty_like(layout.rows)
    chosen = np.empty(count, np.int64)
    chosen[0] = start
    for k in range(1, count):
        slot, chosen[k] = _farthest(leaf_max, by_leaf, original, slot_of)
        centre, coord = layout.rows[slot], flat_coords[slot]
        box_bound = _box_distance(layout, coord[:t].astype(np.float64))
        candidates = np.flatnonzero(box_bound * layout.shrink - layout.slack < growth * leaf_max)
        if candidates.size > leaves // 4:  # little to prune: one dense pass is cheaper
            dense = torch.linalg.vector_norm(torch.sub(layout.rows, centre, out=buffer), dim=1)
            np.minimum(nearest, dense.numpy(), out=nearest)
            leaf_max = by_leaf.max(1)
            continue
        offsets = layout.coords[candidates] - coord
        bound = np.sqrt(np.einsum("ijk,ijk->ij", offsets, offsets)) * layout.shrink
        current = by_leaf[candidates]
        recompute = slot_of[candidates][bound - layout.slack < growth * current]
        rows = torch.index_select(
            layout.rows, 0, torch.from_numpy(recompute), out=buffer[: recompute.size]
        )
        distance = torch.linalg.vector_norm(rows.sub_(centre), dim=1).numpy()
        nearest[recompute] = np.minimum(nearest[recompute], distance)
        leaf_max[candidates] = by_leaf[candidates].max(1)
    return chosen


def _farthest(
    leaf_max: np.ndarray, by_leaf: np.ndarray, original: np.ndarray, slot_of: np.ndarray
) -> tuple[int, int]:
    """(slot, original index) of the point with the largest nearest-centre distance; among
    equals, the smallest original index (what the plain algorithm's argmax returns)."""
    top = np.flatnonzero(leaf_max == leaf_max.max())
    hit = by_leaf[top] == leaf_max[top[0]]
    names = original[top][hit]
    best = int(np.argmin(names))
    return int(slot_of[top][hit][best]), int(names[best])


def _box_distance(layout: _Layout, point: np.ndarray) -> np.ndarray:
    """Distance from ``point`` to every leaf's bounding box (0 inside)."""
    gap = np.maximum(layout.box_low - point, 0) + np.maximum(point - layout.box_high, 0)
    return np.sqrt(np.einsum("ij,ij->i", gap, gap))
