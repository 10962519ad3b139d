"""Pseudo-anomaly strategies, their registry, and the seeded generator built from them.

A strategy is a factory ``factory(context) -> apply`` where ``apply(image, rng)`` returns the
pseudo-anomalous image and its mask. Register your own with ``@register_strategy("name")``: it
becomes selectable by name in configs and studies like the built-in ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pagmfr.anomalies.defects import DEFECT_TYPES, add_defect
from pagmfr.anomalies.foreground import foreground_mask
from pagmfr.anomalies.perlin import PerlinMaskSampler
from pagmfr.anomalies.settings import GeneratorSettings
from pagmfr.anomalies.sources import Cutout, load_cutouts, load_textures
from pagmfr.categories import TEXTURE, validate_kind

AnomalyFn = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class StrategyContext:
    """What a strategy may draw on; sources load on first use and are shared by strategies."""

    def __init__(
        self,
        category_kind: str,
        image_size: int,
        settings: GeneratorSettings,
        seed: int,
        texture_dir: str | Path | None = None,
        object_dir: str | Path | None = None,
    ):
        self.category_kind = validate_kind(category_kind)
        self.image_size = image_size
        self.settings = settings
        self.seed = seed
        self.texture_dir = texture_dir
        self.object_dir = object_dir

    @functools.cached_property
    def textures(self) -> list[np.ndarray]:
        """The texture bank (a user's folder or the built-in photographs), loaded on first use."""
        return load_textures(self.texture_dir, self.image_size, self.settings.bank_size, self.seed)

    @functools.cached_property
    def cutouts(self) -> list[Cutout]:
        """Object cut-outs (a user's folder or the built-in photographs), loaded on first use."""
        return load_cutouts(self.object_dir, self.settings.bank_size, self.seed)

    @functools.cached_property
    def perlin_masks(self) -> PerlinMaskSampler:
        """The seeded Perlin mask sampler with this context's knobs."""
        settings = self.settings
        return PerlinMaskSampler(
            settings.perlin_scales,
            settings.perlin_threshold,
            settings.rotate,
            settings.coverage,
            max_tries=settings.max_tries,
            seed=self.seed,
        )


StrategyFactory = Callable[[StrategyContext], AnomalyFn]
_STRATEGIES: dict[str, StrategyFactory] = {}


def register_strategy(
    name: str, *, replace: bool = False
) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: make ``factory(context) -> apply`` selectable as ``strategy=name``."""

    def register(factory: StrategyFactory) -> StrategyFactory:
        if name in _STRATEGIES and not replace:
            raise ValueError(f"strategy {name!r} is already registered; pass replace=True")
        _STRATEGIES[name] = factory
        return factory

    return register


def available_strategies() -> list[str]:
    """The registered strategy names, sorted."""
    return sorted(_STRATEGIES)


def strategy_factory(name: str) -> StrategyFactory:
    """The factory registered as ``name``, or an error listing the available ones."""
    if name not in _STRATEGIES:
        raise ValueError(
            f"unknown strategy {name!r}; available: {', '.join(available_strategies())}"
        )
    return _STRATEGIES[name]


# ---- helpers shared by the built-in strategies ----


def paste(
    image: np.ndarray,
    content: np.ndarray,
    region: np.ndarray,
    window: tuple[slice, slice] = (slice(None), slice(None)),
) -> tuple[np.ndarray, np.ndarray]:
    """``content`` inside ``region``, ``image`` elsewhere (bit for bit). ``content`` and
    ``region`` cover ``window`` of the image (all of it by default). The mask is the part of
    the region whose pixels actually changed, so it never claims an unchanged pixel."""
    out = image.copy()
    mask = np.zeros(image.shape[:2], dtype=bool)
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return out, mask
    # Work inside the region's bounding box only: anomalies cover a few percent of the image.
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    top = (window[0].start or 0) + rows[0]
    left = (window[1].start or 0) + cols[0]
    target = (slice(top, top + rows[-1] + 1 - rows[0]), slice(left, left + cols[-1] + 1 - cols[0]))
    region = region[box]
    cv2.copyTo(content[box], region.view(np.uint8), out[target])  # writes into ``out``
    mask[target] = region & changed_pixels(out[target], image[target])
    return out, mask


def changed_pixels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bool (H, W): where any channel differs (OR of channels: ten times np.any(axis=2))."""
    differs = a != b
    return differs[..., 0] | differs[..., 1] | differs[..., 2]


def until_visible(apply: AnomalyFn, max_tries: int) -> AnomalyFn:
    """Draw again until the anomaly changed at least one pixel."""

    def visible(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(max_tries):
            out, mask = apply(image, rng)
            if mask.any():
                return out, mask
        raise RuntimeError(f"no visible pseudo-anomaly after {max_tries} tries; check the knobs")

    return visible


def _random_lut(rng: np.random.Generator) -> np.ndarray:
    """A per-channel lookup table composing a few colour augmentations (DRAEM draws three of
    gamma, brightness, contrast, solarize, posterize, invert)."""
    levels = np.arange(256, dtype=np.float32)[:, None].repeat(3, axis=1)
    ops = rng.choice(6, size=3, replace=False)
    for op in ops:
        if op == 0:
            levels = 255 * (levels / 255) ** rng.uniform(0.5, 2.0, size=3)
        elif op == 1:
            levels = levels * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-30, 30, size=3)
        elif op == 2:
            levels = (levels - 128) * rng.uniform(0.6, 1.6) + 128
        elif op == 3:
            cut = rng.uniform(32, 128)
            levels = np.where(levels >= cut, 255 - levels, levels)
        elif op == 4:
            step = 2 ** (8 - int(rng.integers(4, 8)))
            levels = np.floor(levels / step) * step
        else:
            levels = 255 - levels
        levels = np.clip(levels, 0, 255)
    return np.rint(levels).astype(np.uint8).reshape(256, 1, 3)


def augment_texture(
    texture: np.ndarray, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """A random crop of ``texture``, flipped/rotated by multiples of 90 degrees, colour-jittered."""
    if texture.shape[0] < height or texture.shape[1] < width:
        scale = max(height / texture.shape[0], width / texture.shape[1])
        texture = cv2.resize(
            texture,
            (int(np.ceil(texture.shape[1] * scale)), int(np.ceil(texture.shape[0] * scale))),
        )
    top = int(rng.integers(texture.shape[0] - height + 1))
    left = int(rng.integers(texture.shape[1] - width + 1))
    # OpenCV for the flips and the channel shuffle: numpy views with negative strides would
    # need a slow copy before every OpenCV call.
    crop = cv2.LUT(texture[top : top + height, left : left + width], _random_lut(rng))
    flip = int(rng.integers(4))  # none, vertical, horizontal, both
    if flip:
        crop = cv2.flip(crop, (0, 1, -1)[flip - 1])
    if height == width and rng.random() < 0.5:
        crop = cv2.transpose(crop)
    if rng.random() < 0.5:
        crop = cv2.merge([crop[:, :, c] for c in rng.permutation(3)])
    return crop


def _place_cutout(
    image: np.ndarray,
    cutout: Cutout,
    rng: np.random.Generator,
    settings: GeneratorSettings,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale, rotate and paste ``cutout`` with a soft edge, centred on a pixel of ``allowed``
    (anywhere when None) and clipped to it. Works inside the pasted window only."""
    height, width = image.shape[:2]
    target = rng.uniform(*settings.object_scale) * min(height, width)
    factor = target / max(cutout.footprint.shape)
    side = int(np.ceil(np.hypot(*cutout.footprint.shape) * factor)) + 2 * settings.feather + 2
    centre = np.array(cutout.footprint.shape[::-1], dtype=np.float64) / 2
    matrix = cv2.getRotationMatrix2D(tuple(centre), rng.uniform(0, 360), factor)
    matrix[:, 2] += side / 2 - centre  # the rotation keeps ``centre`` fixed: move it to the middle
    patch = cv2.warpAffine(cutout.rgb, matrix, (side, side), flags=cv2.INTER_LINEAR)
    footprint = cv2.warpAffine(cutout.footprint.astype(np.uint8) * 255, matrix, (side, side)) > 127
    alpha = footprint.astype(np.float32)
    if settings.feather:
        k = 2 * settings.feather + 1
        alpha = cv2.GaussianBlur(alpha, (k, k), 0) * footprint  # soft edge, inside the footprint
    if allowed is not None:
        candidates = np.flatnonzero(allowed)
        cy, cx = divmod(int(candidates[rng.integers(candidates.size)]), width)
    else:
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, left = cy - side // 2, cx - side // 2
    window = (
        slice(max(top, 0), min(top + side, height)),
        slice(max(left, 0), min(left + side, width)),
    )
    local = (
        slice(window[0].start - top, window[0].stop - top),
        slice(window[1].start - left, window[1].stop - left),
    )
    region = footprint[local] if allowed is None else footprint[local] & allowed[window]
    a = alpha[local][..., None]
    background = image[window]
    content = np.rint(a * patch[local] + (1 - a) * background).astype(np.uint8)
    return paste(image, content, region, window)


# ---- built-in strategies ----


@register_strategy("none")
def none_strategy(context: StrategyContext) -> AnomalyFn:
    """The ablation baseline: no pseudo-anomalies at all."""

    def apply(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return image.copy(), np.zeros(image.shape[:2], dtype=bool)

    return apply


@register_strategy("texture")
def texture_strategy(context: StrategyContext) -> AnomalyFn:
    """A texture blended into the image under a Perlin mask (DRAEM-style)."""
    textures, masks, settings = context.textures, context.perlin_masks, context.settings

    def apply(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        region = masks(height, width, rng)
        texture = augment_texture(textures[int(rng.integers(len(textures)))], height, width, rng)
        beta = rng.uniform(*settings.blend)
        return paste(image, cv2.addWeighted(texture, 1.0 - beta, image, beta, 0.0), region)

    return until_visible(apply, settings.max_tries)


def _object_strategy(context: StrategyContext, on_foreground: bool) -> AnomalyFn:
    cutouts, settings = context.cutouts, context.settings

    def apply(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        allowed = foreground_mask(image) if on_foreground else None
        cutout = cutouts[int(rng.integers(len(cutouts)))]
        return _place_cutout(image, cutout, rng, settings, allowed)

    return until_visible(apply, settings.max_tries)


@register_strategy("object")
def object_strategy(context: StrategyContext) -> AnomalyFn:
    """An object cut out of an external image, pasted anywhere with a soft edge."""
    return _object_strategy(context, on_foreground=False)


@register_strategy("adaptive")
def adaptive_strategy(context: StrategyContext) -> AnomalyFn:
    """Textures get texture anomalies; objects get pasted objects on the object itself."""
    if context.category_kind == TEXTURE:
        return texture_strategy(context)
    return _object_strategy(context, on_foreground=True)


@register_strategy("defects")
def defects_strategy(context: StrategyContext) -> AnomalyFn:
    """One scratch, hole or swirl (the embedded dataset's defect family), drawn at random; the
    mask is the painted region. No training generator makes these: validation's default."""

    def apply(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        defect = DEFECT_TYPES[int(rng.integers(len(DEFECT_TYPES)))]
        return add_defect(image, defect, rng, context.category_kind)

    return apply
