"""AU-PRO speed and memory: pagmfr's exact au_pro against the common research-code loop.

The baseline is what much public anomaly-detection code does: 200 fixed thresholds; at each,
binarise the maps, label the ground-truth regions of every image and measure each region's
overlap, keep FPR < 0.3, rescale FPR to [0, 1] and integrate. It is approximate as well as
slow; both values are printed. Run: ``python benchmarks/metrics.py [--maps 100] [--size 256]``.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import measure
from sklearn.metrics import auc

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_time, one_core  # noqa: E402

from pagmfr.metrics import au_pro  # noqa: E402


def realistic_maps(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half the images defective (a few blobs each); maps are smooth noise plus a soft response."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), bool)
    ys, xs = np.mgrid[0:size, 0:size]
    for i in range(0, count, 2):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0.1, 0.9, 2) * size
            ry, rx = rng.uniform(0.02, 0.12, 2) * size
            masks[i] |= ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=masks.shape), sigma=(0, 4, 4))
    response = ndimage.gaussian_filter(masks.astype(float), sigma=(0, 3, 3))
    return (noise * 3 + response * rng.uniform(0.5, 1.5)).astype(np.float32), masks


def research_code_pro(maps: np.ndarray, masks: np.ndarray, steps: int = 200) -> float:
    """The common 200-threshold loop (see module docstring), written out plainly."""
    lo, hi = maps.min(), maps.max()
    delta = (hi - lo) / steps
    fprs, pros = [], []
    inverse = ~masks
    for threshold in np.arange(lo, hi, delta):
        binary = maps > threshold
        overlaps = []
        for binary_map, mask in zip(binary, masks, strict=True):
            for region in measure.regionprops(measure.label(mask)):
                rows, cols = region.coords[:, 0], region.coords[:, 1]
                overlaps.append(binary_map[rows, cols].sum() / region.area)
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < 0.3
    fprs, pros = fprs[keep], pros[keep]
    return float(auc(fprs / fprs.max(), pros))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    one_core()
    maps, masks = realistic_maps(args.maps, args.size)
    print(f"{args.maps} maps of {args.size}x{args.size}, {masks.any((1, 2)).sum()} defective")

    ours_s, ours = best_time(lambda: au_pro(maps, masks), repeats=5)
    tracemalloc.start()
    au_pro(maps, masks)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    base_s, base = best_time(lambda: research_code_pro(maps, masks), repeats=1)

    print(f"pagmfr au_pro (exact)        {ours_s * 1000:9.1f} ms   AU-PRO {ours:.6f}")
    print(f"200-threshold loop (approx.) {base_s * 1000:9.1f} ms   AU-PRO {base:.6f}")
    print(f"speed-up: {base_s / ours_s:.0f}x (target >= 50x)")
    print(f"au_pro peak extra memory: {peak / maps.nbytes:.2f}x the maps ({peak / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
