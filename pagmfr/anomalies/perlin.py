"""Perlin noise masks for texture pseudo-anomalies.

Design: the `noise` package is the reference implementation, but it is called per pixel (about
18 masks/s at 256 px), far too slow to run per sample. ``perlin_field`` is a vectorised port of
its improved-noise algorithm (same fade curve, gradient table and hashing; with the standard
permutation it equals ``noise.pnoise2`` to float precision, which the tests check), and
``PerlinMaskSampler`` keeps a small bank of such fields per scale. The fields are periodic, so
a random toroidal shift of a field is another valid Perlin field at a random lattice offset;
together with the eight flips/transposes and an optional rotation, a bank of a few fields per
scale gives masks indistinguishable from fresh draws at a fraction of the cost.
"""

from __future__ import annotations

import cv2
import numpy as np

# fmt: off
# Ken Perlin's reference permutation, the one `noise` uses.
PERLIN_PERMUTATION = np.array([
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225, 140, 36,
    103, 30, 69, 142, 8, 99, 37, 240, 21, 10, 23, 190, 6, 148, 247, 120, 234, 75,
    0, 26, 197, 62, 94, 252, 219, 203, 117, 35, 11, 32, 57, 177, 33, 88, 237, 149,
    56, 87, 174, 20, 125, 136, 171, 168, 68, 175, 74, 165, 71, 134, 139, 48, 27, 166,
    77, 146, 158, 231, 83, 111, 229, 122, 60, 211, 133, 230, 220, 105, 92, 41, 55, 46,
    245, 40, 244, 102, 143, 54, 65, 25, 63, 161, 1, 216, 80, 73, 209, 76, 132, 187,
    208, 89, 18, 169, 200, 196, 135, 130, 116, 188, 159, 86, 164, 100, 109, 198, 173, 186,
    3, 64, 52, 217, 226, 250, 124, 123, 5, 202, 38, 147, 118, 126, 255, 82, 85, 212,
    207, 206, 59, 227, 47, 16, 58, 17, 182, 189, 28, 42, 223, 183, 170, 213, 119, 248,
    152, 2, 44, 154, 163, 70, 221, 153, 101, 155, 167, 43, 172, 9, 129, 22, 39, 253,
    19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112, 104, 218, 246, 97, 228, 251, 34,
    242, 193, 238, 210, 144, 12, 191, 179, 162, 241, 81, 51, 145, 235, 249, 14, 239, 107,
    49, 192, 214, 31, 181, 199, 106, 157, 184, 84, 204, 176, 115, 121, 50, 45, 127, 4,
    150, 254, 138, 236, 205, 93, 222, 114, 67, 29, 24, 72, 243, 141, 128, 195, 78, 66,
    215, 61, 156, 180,
], dtype=np.int64)

# The 2-D part of improved noise's gradient table (hash & 15 picks a row).
_GRADIENTS = np.array([
    [1, 1], [-1, 1], [1, -1], [-1, -1], [1, 0], [-1, 0], [1, 0], [-1, 0],
    [0, 1], [0, -1], [0, 1], [0, -1], [1, 0], [-1, 0], [0, -1], [0, 1],
], dtype=np.float32)
# fmt: on


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_field(
    height: int, width: int, cells: tuple[int, int], permutation: np.ndarray | None = None
) -> np.ndarray:
    """One octave of periodic Perlin noise, float32 (height, width), ``cells`` = (x, y) lattice
    cells across the field. Pixel (r, c) equals ``noise.pnoise2(c * cx / width, r * cy / height,
    repeatx=cx, repeaty=cy)`` when ``permutation`` is the reference one (the default)."""
    cells_x, cells_y = cells
    perm = PERLIN_PERMUTATION if permutation is None else np.asarray(permutation, dtype=np.int64)
    perm = np.concatenate([perm, perm])
    x = (np.arange(width, dtype=np.float32) * np.float32(cells_x / width)).astype(np.float32)
    y = (np.arange(height, dtype=np.float32) * np.float32(cells_y / height)).astype(np.float32)
    i, j = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ii, jj = (i + 1) % cells_x, (j + 1) % cells_y
    fx, fy = x - i, y - j
    ux, uy = _fade(fx)[None, :], _fade(fy)[:, None]
    fx, fy = fx[None, :], fy[:, None]

    def gradient_dot(column: np.ndarray, row: np.ndarray, dx, dy) -> np.ndarray:
        hashed = perm[perm[perm[column & 255][None, :] + (row & 255)[:, None]]]
        gradient = _GRADIENTS[hashed & 15]
        return dx * gradient[..., 0] + dy * gradient[..., 1]

    n00 = gradient_dot(i, j, fx, fy)
    n10 = gradient_dot(ii, j, fx - 1, fy)
    n01 = gradient_dot(i, jj, fx, fy - 1)
    n11 = gradient_dot(ii, jj, fx - 1, fy - 1)
    bottom = n00 + ux * (n10 - n00)
    top = n01 + ux * (n11 - n01)
    return (bottom + uy * (top - bottom)).astype(np.float32)


class PerlinMaskSampler:
    """Binary Perlin masks at random scales (2^lo .. 2^hi cells per axis, as in DRAEM).

    ``threshold`` binarises the field; masks whose coverage falls outside ``coverage`` are
    drawn again. Fields are made lazily, ``fields_per_scale`` per (scale x, scale y, size).
    """

    def __init__(
        self,
        scale_exponents: tuple[int, int] = (0, 5),
        threshold: float = 0.5,
        rotate: bool = True,
        coverage: tuple[float, float] = (0.001, 0.6),
        fields_per_scale: int = 4,
        max_tries: int = 100,
        seed: int = 0,
    ):
        self.seed = seed
        self.scale_exponents = scale_exponents
        self.threshold = threshold
        self.rotate = rotate
        self.coverage = coverage
        self.fields_per_scale = fields_per_scale
        self.max_tries = max_tries
        self._bank: dict[tuple[int, int, int, int, int], np.ndarray] = {}

    def _field(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.scale_exponents
        cells_x, cells_y = 2 ** int(rng.integers(lo, hi + 1)), 2 ** int(rng.integers(lo, hi + 1))
        # One periodic cell has one lattice point (a flat, faint field): draw such an axis at
        # twice the period and show half of it, so a crop spans one cell with distinct corners.
        tile_x, tile_y = (2 if cells_x == 1 else 1), (2 if cells_y == 1 else 1)
        key = (height * tile_y, width * tile_x, cells_x * tile_x, cells_y * tile_y,
               int(rng.integers(self.fields_per_scale)))  # fmt: skip
        if key not in self._bank:
            # A field depends on (seed, size, scale, slot) only, never on which sample first
            # asked for it: samples stay the same in any worker, order or resumed run.
            permutation = np.random.default_rng([self.seed, *key]).permutation(256)
            self._bank[key] = perlin_field(key[0], key[1], key[2:4], permutation)
        shift = (rng.integers(key[0]), rng.integers(key[1]))
        field = np.roll(self._bank[key], shift, axis=(0, 1))[:height, :width]
        flip = int(rng.integers(4))  # none, vertical, horizontal, both
        if flip:
            field = cv2.flip(field, (0, 1, -1)[flip - 1])
        if self.rotate:
            angle = rng.uniform(-90, 90)
            matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
            field = cv2.warpAffine(
                field,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )
        return field

    def __call__(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """A bool (height, width) mask whose coverage lies within the configured bounds."""
        lo, hi = self.coverage
        for _ in range(self.max_tries):
            mask = self._field(height, width, rng) > self.threshold
            if lo * mask.size <= np.count_nonzero(mask) <= hi * mask.size and mask.any():
                return mask
        raise RuntimeError(
            f"no Perlin mask with coverage in [{lo}, {hi}] after {self.max_tries} tries at "
            f"threshold {self.threshold} on a {width}x{height} image; widen `coverage` or lower "
            "`perlin_threshold` (or use larger images: a few pixels rarely reach it)"
        )
