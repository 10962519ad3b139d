"""One typed, validated config; every sweepable knob lives here once under a dotted key.

A trial's config is a flat dict (``{"loss.focal": 2.0, "fusion.mode": "add"}``): studies and
``--set key=value`` address knobs that way, and validation happens here, once, with errors that
name the key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

Method = Literal["pagmfr", "rgpkd"]
BackboneName = Literal["resnet18", "resnet34", "resnet50", "wide_resnet50_2"]


@dataclass
class DataConfig:
    #: An MVTec AD-layout folder, or "synthetic" for the embedded dataset.
    root: str = "synthetic"
    category: str = "brick"
    #: texture | object; None: from the category (MVTec AD, pagmfr_categories.json, else object).
    kind: str | None = None
    image_size: int = 256
    #: Share of train/good held out as the validation set (model selection never sees test).
    val_fraction: float = 0.2
    num_workers: int = 0


@dataclass
class GeneratorConfig:
    strategy: str = "adaptive"
    normal_probability: float = 0.5
    blend: tuple[float, float] = (0.0, 0.8)
    perlin_threshold: float = 0.5
    coverage: tuple[float, float] = (0.001, 0.6)
    object_scale: tuple[float, float] = (0.15, 0.4)
    texture_dir: str | None = None
    object_dir: str | None = None


@dataclass
class ValidationConfig:
    #: The held-out validation images get pseudo-anomalies from this strategy, fixed across
    #: epochs and variants, so every variant is selected on the same yardstick.
    strategy: str = "adaptive"
    #: Choose the best checkpoint on the test set instead: possible, recorded, never default.
    select_on_test: bool = False
    metric: Literal["au_pro", "pixel_auroc", "image_auroc"] = "au_pro"


@dataclass
class BackboneConfig:
    name: BackboneName = "resnet18"
    #: "imagenet" (torchvision's weights, cached in TORCH_HOME), "none", or a state-dict path.
    weights: str = "imagenet"
    #: ResNet stages whose features are used (1-4); the study's "backbone depth".
    layers: tuple[int, ...] = (1, 2, 3)


@dataclass
class FusionConfig:
    #: MFFM: concat (channel concatenation + conv, as in the paper), add, or none (no module).
    mode: Literal["concat", "add", "none"] = "concat"
    channels: int = 64


@dataclass
class AnomalyConfig:
    #: Which maps feed the anomaly head: feature (cosine), image (CIELAB + SSIM), or both.
    branches: Literal["feature", "image", "both"] = "both"
    hidden: int = 32
    #: Gaussian smoothing of the anomaly map (pixels at model resolution; 0: off).
    smoothing_sigma: float = 4.0
    #: Image score: max of the smoothed map, or mean of its top-k pixels.
    score: Literal["max", "topk"] = "max"
    topk: int = 100


@dataclass
class LossConfig:
    image_mse: float = 1.0
    image_ssim: float = 1.0
    feature: float = 1.0
    focal: float = 1.0
    focal_gamma: float = 2.0
    #: Class weight of defective pixels; -1 turns weighting off (as in DRAEM): defects are sparse.
    focal_alpha: float = -1.0


@dataclass
class RGPKDConfig:
    prompts: bool = True
    prompts_at_inference: bool = True
    reconstruction: bool = True
    student: Literal["unet", "symmetric"] = "unet"
    #: Prompt bank: at most this many training images, in at most this much memory (float16).
    bank_size: int = 256
    bank_max_mb: float = 512.0
    #: How the bank is subsampled when it must shrink: random, or a k-centre coreset.
    bank_sampling: Literal["random", "coreset"] = "random"
    topk: int = 1
    distillation: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    #: cosine annealing, or linear warm-up then linear decay; auto: each method's own
    #: (cosine for PAGMFR, warmup_linear for RGPKD, as their authors train).
    scheduler: Literal["auto", "cosine", "warmup_linear", "constant"] = "auto"
    warmup_epochs: int = 5
    grad_accumulation: int = 1
    seed: int = 0
    #: auto: CUDA when available, else CPU.
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    eval_every: int = 1


@dataclass
class Config:
    method: Method = "pagmfr"
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    rgpkd: RGPKDConfig = field(default_factory=RGPKDConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_flat(self) -> dict[str, Any]:
        """``{"loss.focal": 1.0, ...}`` with tuples as lists: JSON- and MLflow-friendly."""
        flat: dict[str, Any] = {"method": self.method}
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if dataclasses.is_dataclass(value):
                for f in dataclasses.fields(value):
                    item = getattr(value, f.name)
                    flat[f"{section.name}.{f.name}"] = (
                        list(item) if isinstance(item, tuple) else item
                    )
        return flat

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A validated copy with dotted-key overrides; values may be typed or strings."""
        flat = self.to_flat()
        for key, value in overrides.items():
            if key not in flat:
                raise ValueError(_unknown_key_message(key, flat))
            flat[key] = value
        return Config.from_flat(flat)

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Config:
        known = cls().to_flat()
        for key in flat:
            if key not in known:
                raise ValueError(_unknown_key_message(key, known))
        hints = _field_types()
        sections: dict[str, dict[str, Any]] = {}
        method = "pagmfr"
        for key, value in flat.items():
            parsed = coerce(key, value, hints[key])
            if key == "method":
                method = parsed
            else:
                section, name = key.split(".", 1)
                sections.setdefault(section, {})[name] = parsed
        section_types = {f.name: f.type for f in dataclasses.fields(cls)}
        built = {
            name: _SECTION_CLASSES[section_types[name]](**values)
            for name, values in sections.items()
        }
        config = cls(method=method, **built)
        config.validate()
        return config

    def validate(self) -> None:
        """Cross-field and range checks, each naming its key."""
        checks = [
            ("data.image_size", self.data.image_size >= 32, "must be at least 32"),
            ("data.val_fraction", 0.0 < self.data.val_fraction < 1.0, "must be in (0, 1)"),
            ("data.num_workers", self.data.num_workers >= 0, "must be >= 0"),
            (
                "data.kind",
                self.data.kind in (None, "texture", "object"),
                "must be texture, object or none",
            ),
            (
                "backbone.layers",
                bool(self.backbone.layers)
                and set(self.backbone.layers) <= {1, 2, 3, 4}
                and list(self.backbone.layers) == sorted(set(self.backbone.layers)),
                "must be increasing stages from 1-4, e.g. 1,2,3",
            ),
            ("train.epochs", self.train.epochs >= 1, "must be >= 1"),
            ("train.batch_size", self.train.batch_size >= 1, "must be >= 1"),
            ("train.lr", 0.0 < self.train.lr < 10.0, "must be in (0, 10)"),
            ("train.weight_decay", self.train.weight_decay >= 0.0, "must be >= 0"),
            ("train.grad_accumulation", self.train.grad_accumulation >= 1, "must be >= 1"),
            ("train.eval_every", self.train.eval_every >= 1, "must be >= 1"),
            ("train.warmup_epochs", self.train.warmup_epochs >= 0, "must be >= 0"),
            ("anomaly.topk", self.anomaly.topk >= 1, "must be >= 1"),
            ("anomaly.smoothing_sigma", self.anomaly.smoothing_sigma >= 0.0, "must be >= 0"),
            ("fusion.channels", self.fusion.channels >= 1, "must be >= 1"),
            ("anomaly.hidden", self.anomaly.hidden >= 1, "must be >= 1"),
            ("rgpkd.bank_size", self.rgpkd.bank_size >= 1, "must be >= 1"),
            ("rgpkd.topk", self.rgpkd.topk >= 1, "must be >= 1"),
            ("rgpkd.bank_max_mb", self.rgpkd.bank_max_mb > 0, "must be > 0"),
            ("rgpkd.distillation", self.rgpkd.distillation >= 0, "must be >= 0"),
        ]
        for name in ("image_mse", "image_ssim", "feature", "focal", "focal_gamma"):
            checks.append((f"loss.{name}", getattr(self.loss, name) >= 0.0, "must be >= 0"))
        checks.append(
            (
                "loss.focal_alpha",
                -1.0 <= self.loss.focal_alpha <= 1.0,
                "must be in [-1, 1] (<0: off)",
            )
        )
        for key, ok, message in checks:
            if not ok:
                raise ValueError(f"{key} {message}; got {self.to_flat()[key]!r}")
        from pagmfr.anomalies import GeneratorSettings, available_strategies

        for key in ("generator.strategy", "validation.strategy"):
            strategy = self.to_flat()[key]
            if strategy not in available_strategies():
                raise ValueError(
                    f"{key}: unknown strategy {strategy!r}; "
                    f"allowed: {', '.join(available_strategies())}"
                )
        if self.validation.strategy == "none":
            raise ValueError(
                "validation.strategy cannot be none: validation needs pseudo-anomalies"
            )
        try:
            GeneratorSettings.from_knobs(**self.generator_knobs())
        except ValueError as err:
            raise ValueError(f"generator: {err}") from err

    @property
    def scheduler(self) -> str:
        """The learning-rate schedule in force, with ``auto`` resolved per method."""
        if self.train.scheduler != "auto":
            return self.train.scheduler
        return "warmup_linear" if self.method == "rgpkd" else "cosine"

    @property
    def uses_pseudo_anomalies(self) -> bool:
        """RGPKD distils on normal images only; its loader need not make pseudo-anomalies."""
        return self.method == "pagmfr"

    def generator_knobs(self) -> dict[str, Any]:
        g = self.generator
        return dict(
            normal_probability=g.normal_probability,
            blend=g.blend,
            perlin_threshold=g.perlin_threshold,
            coverage=g.coverage,
            object_scale=g.object_scale,
        )


_SECTION_CLASSES = {
    cls.__name__: cls
    for cls in (
        DataConfig,
        GeneratorConfig,
        ValidationConfig,
        BackboneConfig,
        FusionConfig,
        AnomalyConfig,
        LossConfig,
        RGPKDConfig,
        TrainConfig,
    )
}


def _field_types() -> dict[str, Any]:
    hints = {"method": typing.get_type_hints(Config)["method"]}
    for section in dataclasses.fields(Config):
        if section.name == "method":
            continue
        cls = _SECTION_CLASSES[section.type]
        for name, hint in typing.get_type_hints(cls).items():
            hints[f"{section.name}.{name}"] = hint
    return hints


def _unknown_key_message(key: str, known: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown config key {key!r}{hint} (keys: {', '.join(sorted(known))})"


def _parse_scalar(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key} must be true or false; got {value!r}")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{key} must be an integer; got {value!r}")
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except ValueError:
            raise ValueError(f"{key} must be an integer; got {value!r}") from None
    if kind is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number; got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{key} must be a finite number; got {value!r}")
        return number
    return str(value)


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Turn ``value`` (typed, or a ``--set`` string) into the field's type, or name the key."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):  # Optional[...]
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("none", "null", "")
        ):
            return None
        return coerce(key, value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        items = (
            [v for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
        )
        if args[-1] is Ellipsis:
            return tuple(_parse_scalar(key, v, args[0]) for v in items)
        if len(items) != len(args):
            raise ValueError(f"{key} must have {len(args)} comma-separated values; got {value!r}")
        return tuple(_parse_scalar(key, v, a) for v, a in zip(items, args, strict=True))
    return _parse_scalar(key, value, hint)


def parse_set_arguments(pairs: list[str]) -> dict[str, str]:
    """``["loss.focal=2", ...]`` -> ``{"loss.focal": "2"}``; values are coerced later."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {pair!r}")
        overrides[key.strip()] = value.strip()
    return overrides
