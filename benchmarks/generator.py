"""Pseudo-anomaly generator throughput: samples/s on one core at 256x256, per strategy.

The baseline is a straightforward DRAEM-style generator written here: for every sample, a fresh
vectorised numpy Perlin field (random unit gradients at a random scale), thresholded, with a
randomly cropped texture blended in. Every sample is anomalous on both sides
(normal_probability 0), the worst case. Figures are steady state: the one-off start-up (Perlin
bank, cut-outs) is printed on its own. Run: ``python benchmarks/generator.py [--samples 2000]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import one_core  # noqa: E402

from pagmfr.anomalies import make_generator  # noqa: E402
from pagmfr.anomalies.preview import default_image  # noqa: E402
from pagmfr.anomalies.sources import builtin_textures  # noqa: E402

SIZE = 256


def fresh_perlin(
    shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """One Perlin field, computed from scratch the way research code does it."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    gy, gx = ys * cells[0] / height, xs * cells[1] / width
    iy, ix = gy.astype(int), gx.astype(int)
    fy, fx = gy - iy, gx - ix
    angles = rng.uniform(0, 2 * np.pi, (cells[0] + 1, cells[1] + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[iy + dy, ix + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) + ux * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + ux * (corner(1, 1) - corner(1, 0))
    return np.sqrt(2) * (top + uy * (bottom - top))


def baseline_sample(image: np.ndarray, textures: list[np.ndarray], rng: np.random.Generator):
    """What DRAEM does per sample, in plain numpy/OpenCV: a fresh Perlin field at a random
    scale, rotated by up to 90 degrees and thresholded; the texture resized to the image and
    given three random colour augmentations; a float blend."""
    while True:
        cells = (2 ** int(rng.integers(0, 6)), 2 ** int(rng.integers(0, 6)))
        field = fresh_perlin(image.shape[:2], cells, rng).astype(np.float32)
        rotation = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), rng.uniform(-90, 90), 1.0)
        mask = cv2.warpAffine(field, rotation, (SIZE, SIZE)) > 0.5
        if mask.any():
            break
    texture = cv2.resize(textures[int(rng.integers(len(textures)))], (SIZE, SIZE)).astype(
        np.float32
    )
    for op in rng.choice(5, size=3, replace=False):
        if op == 0:
            texture = 255 * (texture / 255) ** rng.uniform(0.5, 2.0)
        elif op == 1:
            texture = np.clip(texture * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30), 0, 255)
        elif op == 2:
            texture = np.where(texture >= rng.uniform(32, 128), 255 - texture, texture)
        elif op == 3:
            texture = np.floor(texture / 16) * 16
        else:
            texture = 255 - texture
    beta = rng.uniform(0, 0.8)
    m = mask[..., None].astype(np.float32)
    blended = (1 - m) * image + m * ((1 - beta) * texture + beta * image)
    return blended.astype(np.uint8), mask


def rate(function, samples: int) -> float:
    start = time.perf_counter()
    for _ in range(samples):
        function()
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    one_core()
    images = {kind: default_image(kind, SIZE) for kind in ("texture", "object")}
    textures = list(builtin_textures(SIZE))
    rng = np.random.default_rng(0)
    baseline = rate(
        lambda: baseline_sample(images["texture"], textures, rng), max(args.samples // 10, 50)
    )
    print(f"one core, {SIZE}x{SIZE}, every sample anomalous")
    print(f"{'baseline (fresh numpy Perlin)':<32} {baseline:8.0f} samples/s")
    for strategy, kind in [
        ("texture", "texture"),
        ("object", "object"),
        ("adaptive", "texture"),
        ("adaptive", "object"),
        ("none", "object"),
    ]:
        start = time.perf_counter()
        generator = make_generator(strategy, kind, image_size=SIZE, seed=0, normal_probability=0.0)
        construction = time.perf_counter() - start
        image = images[kind]
        first = rate(lambda g=generator, im=image: g(im), args.samples)  # fills the Perlin bank
        steady = rate(lambda g=generator, im=image: g(im), args.samples)
        print(
            f"{strategy + ' (' + kind + ')':<32} {steady:8.0f} samples/s  "
            f"{steady / baseline:6.1f}x baseline  (first {args.samples}, bank filling: "
            f"{first:.0f}/s = {first / baseline:.1f}x; construction {construction:.2f} s)"
        )
    print("target: texture and adaptive >= 10x baseline")


if __name__ == "__main__":
    main()
