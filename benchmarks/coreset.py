"""Greedy k-centre coreset speed: pagmfr's greedy_coreset against the plain loop, same process.

The plain loop is what anomalib's KCenterGreedy does: per chosen centre, the norm of
``features - centre`` over all N rows, a running ``torch.minimum`` and ``torch.max``. Both run
on the same random-projected features from the same first centre; the indices must be
identical. Workloads: PatchCore patch features (random-weight ResNet-18, stages 2+3) of the
embedded dataset at 128 px (N = 49,152) and 224 px (N = 150,528), projected to 128 and 256
dimensions, 10% kept; and unstructured Gaussian data, the worst case (nothing to prune). On
the large workloads the plain loop runs only its first ``--plain-steps`` (300) centres, unless
``--full`` (each of its steps is one full pass, so its rate is steady); the check then covers
that prefix. Run: ``python benchmarks/coreset.py [--sizes 128 224] [--full] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import one_core  # noqa: E402

from pagmfr.data import SYNTHETIC_CATEGORIES, MVTecAD, make_synthetic_dataset  # noqa: E402
from pagmfr.models import ResNetFeatures  # noqa: E402
from pagmfr.models.coreset import greedy_coreset, random_projection, start_index  # noqa: E402
from pagmfr.models.patchcore import PatchCore  # noqa: E402


def plain_greedy(features: torch.Tensor, count: int, start: int) -> list[int]:
    """The plain loop, written out: one full distance pass per chosen centre. Indices are kept
    as ints: a list of 0-d tensors pins small blocks across the heap, which then grows by
    ~13 MB per step at N = 49k (seen here: 18 GB before the OOM killer)."""
    chosen = [start]
    min_distances = None
    for _ in range(count - 1):
        centre = features[chosen[-1]]
        distances = torch.linalg.norm(features - centre, ord=2, dim=1, keepdim=True)
        if min_distances is None:
            min_distances = distances
        else:
            min_distances = torch.minimum(min_distances, distances)
        _, index = torch.max(min_distances.squeeze(1), dim=0)
        min_distances[index] = 0.0
        chosen.append(int(index))
    return chosen


def patch_features(size: int, seed: int) -> torch.Tensor:
    """PatchCore's patch features (N, 384) of every training image of the embedded dataset."""
    torch.manual_seed(seed)
    model = PatchCore(ResNetFeatures("resnet18", (2, 3)))
    features = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(tmp, image_size=size)
        for category in SYNTHETIC_CATEGORIES:
            data = MVTecAD(root, category, "train", size)
            images = torch.stack([data[i]["image"] for i in range(len(data))])
            with torch.no_grad():
                for batch in images.split(16):
                    embedding = model.embed(batch)
                    features.append(embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1]))
    return torch.cat(features)


def compare(name: str, features: torch.Tensor, count: int, plain_steps: int | None) -> None:
    """Both selections of ``count`` centres (the plain one cut at ``plain_steps``), checked."""
    start = start_index(len(features), seed=0)
    begin = time.perf_counter()
    fast = greedy_coreset(features, count, start=start).tolist()
    fast_s = time.perf_counter() - begin
    steps = count if plain_steps is None else min(count, plain_steps)
    begin = time.perf_counter()
    plain = plain_greedy(features, steps, start)
    plain_s = time.perf_counter() - begin
    same = "identical" if plain == fast[:steps] else "DIFFERENT"
    scope = "all" if steps == count else f"first {steps}"
    fast_rate, plain_rate = count / fast_s, steps / plain_s
    print(
        f"{name:34s} {len(features):7d} x {features.shape[1]:3d} {count:6d} "
        f"{plain_rate:9.1f} {fast_rate:9.1f} {fast_rate / plain_rate:8.1f}x   "
        f"{same} ({scope})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--plain-steps", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="image sizes")
    parser.add_argument("--full", action="store_true", help="run the plain loop to the end")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    one_core()
    torch.set_num_threads(args.threads)
    limit = None if args.full else args.plain_steps
    print(f"greedy k-centre coreset, {args.ratio:.0%} kept, {args.threads} thread(s)")
    print(
        f"{'features':34s} {'N':>7s}   {'d':>3s} {'kept':>6s} {'plain it/s':>9s} "
        f"{'ours it/s':>9s} {'speed-up':>9s}   indices"
    )
    for size in args.sizes:
        features = patch_features(size, seed=0)
        plain_steps = None if size <= 128 else limit
        count = int(len(features) * args.ratio)
        for dim in (128, 256):
            projected = random_projection(features, dim, seed=0)
            compare(f"embedded {size} px, projected", projected, count, plain_steps)
    noise = torch.randn(60_000, 128, generator=torch.Generator().manual_seed(0))
    compare("Gaussian noise (first 300 only)", noise, 300, None)


if __name__ == "__main__":
    main()
