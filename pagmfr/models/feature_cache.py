"""What a frozen backbone computes once per training run: the features of the unaltered
training images (and what depends on them only, such as a patch memory's distances), keyed by
the image's position in the training set, within a memory bound.

A frozen backbone gives an unaltered training image the same features every epoch, and on the
CPU the same features whatever batch it is in (tested bit for bit), so a cached run gives the
numbers of an uncached one. Beyond its bound the cache stores nothing more and every miss is
recomputed. The engine gives a training run's method one (``train.feature_cache_mb``); a
method used outside the engine has none and computes everything.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

import torch

_MB = 2**20


class FeatureCache:
    """Tensors by key (e.g. ``("features", index)``), at most ``max_mb`` of them in all, kept
    in host memory (a GPU's memory stays the trials')."""

    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * _MB)
        self.used_bytes = 0
        self._entries: dict[Hashable, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, kind: str) -> int:
        """How many entries of ``kind`` (a key's first part) the cache holds."""
        return sum(1 for key in self._entries if key[0] == kind)

    def get(self, key: Hashable) -> list[torch.Tensor] | None:
        return self._entries.get(key)

    def put(self, key: Hashable, tensors: list[torch.Tensor]) -> bool:
        """Keep ``tensors`` (detached host copies) under ``key`` if they fit; whether they
        did."""
        if key in self._entries:
            return True
        size = sum(t.numel() * t.element_size() for t in tensors)
        if self.used_bytes + size > self.max_bytes:
            return False
        self._entries[key] = [t.detach().to("cpu", copy=True) for t in tensors]
        self.used_bytes += size
        return True


def rows_through_cache(
    cache: FeatureCache | None,
    kind: str,
    keys: list[int],
    compute: Callable[[list[int]], list[torch.Tensor]],
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """Per-part tensors (B, ...) for the rows of a batch, each part computed by ``compute``
    at most once per distinct key. A row whose key is >= 0 (an unaltered training image) comes
    from ``cache`` when it holds ``(kind, key)``, is computed once however many rows share its
    key (an image and its unaltered copy), and is stored; a row whose key is -1 (an altered
    image) is always computed. ``compute(rows)`` computes the given rows' parts in one call:
    one backbone pass per batch. The parts come on ``device``, cached floating-point ones in
    ``dtype`` when given (the type ``compute`` returns)."""
    found = {}
    if cache is not None:
        for key in {key for key in keys if key >= 0}:
            entry = cache.get((kind, key))
            if entry is not None:
                found[key] = [_on(part, device, dtype) for part in entry]
    todo: list[int] = []
    first: dict[int, int] = {}  # a missing key -> the row that computes it
    for row, key in enumerate(keys):
        if key < 0:
            todo.append(row)
        elif key not in found and key not in first:
            first[key] = row
            todo.append(row)
    computed = compute(todo) if todo else []
    at = {row: j for j, row in enumerate(todo)}

    def entry(row: int) -> list[torch.Tensor]:
        key = keys[row]
        if key in found:
            return found[key]
        j = at[row if key < 0 else first[key]]
        return [part[j] for part in computed]

    rows = [entry(row) for row in range(len(keys))]
    if cache is not None:
        for key, row in first.items():
            cache.put((kind, key), rows[row])
    return [torch.stack([row[part] for row in rows]) for part in range(len(rows[0]))]


def cached_features(
    cache: FeatureCache | None,
    backbone: Callable[[torch.Tensor], list[torch.Tensor]],
    images: torch.Tensor,
    keys: torch.Tensor | None,
) -> list[torch.Tensor]:
    """``backbone(images)`` without gradients, through ``cache`` for the rows whose key (a
    training-set position, -1: not an unaltered training image) is >= 0."""
    with torch.no_grad():
        if cache is None or keys is None:
            return backbone(images)
        # under mixed precision a computed row comes in the autocast type: so do cached ones
        device = images.device
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else None
        return rows_through_cache(
            cache, "features", keys.tolist(), lambda rows: backbone(images[rows]), device, dtype
        )


def _on(part: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """A cached part on ``device``, floating point in ``dtype`` when given."""
    if dtype is not None and part.is_floating_point():
        return part.to(device, dtype, non_blocking=True)
    return part.to(device, non_blocking=True)


def numbered(batches: Iterable[torch.Tensor]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Each batch of the clean training images (given in training-set order) with its images'
    training-set positions, the keys their features are cached under."""
    seen = 0
    for images in batches:
        yield images, torch.arange(seen, seen + images.shape[0])
        seen += images.shape[0]


def fill_cache(
    cache: FeatureCache | None,
    backbone: Callable[[torch.Tensor], list[torch.Tensor]],
    clean_batches: Iterable[torch.Tensor],
    device: torch.device,
) -> None:
    """Encode the clean training images into ``cache`` batch by batch, as a method's
    ``prepare`` encodes them: a resumed run refills its cache with the very features the
    uninterrupted run computed (the same batches give the same float rounding)."""
    if cache is None:
        return
    for images, own in numbered(clean_batches):
        cached_features(cache, backbone, images.to(device), own)
