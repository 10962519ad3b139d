"""One typed, validated config; every sweepable knob lives here once under a dotted key.

A trial's config is a flat dict (``{"loss.focal": 2.0, "fusion.mode": "add"}``): studies and
``--set key=value`` address knobs that way, and validation happens here, once, with errors that
name the key and the allowed values. Each section checks its own fields (``checks()``); a
method registered with its own settings (``register_model(..., settings=...)``) adds a section
named after it, so ``rgpkd.topk`` lives in the RGPKD file, not here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from pagmfr.anomalies.settings import Check, GeneratorSettings
from pagmfr.files import PLAIN_NAME, is_plain_name

#: Seeds every generator accepts (numpy's legacy seeding takes 32 bits).
MAX_SEED = 2**32 - 1

BackboneName = Literal["resnet18", "resnet34", "resnet50", "wide_resnet50_2"]


@dataclass
class DataConfig:
    """Which data a run reads (``data.*``): the root, the category, its kind and resolution."""

    #: An MVTec AD-layout folder, or "synthetic" for the embedded dataset.
    root: str = "synthetic"
    category: str = "brick"
    #: texture | object; None: from the category (MVTec AD, pagmfr_categories.json, else object).
    kind: str | None = None
    image_size: int = 256
    #: Share of train/good held out as the validation set (model selection never sees test).
    val_fraction: float = 0.2
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


def stages_check(name: str, layers: tuple[int, ...]) -> Check:
    """ResNet stages: a non-empty increasing subset of 1-4."""
    layers = list(layers)
    increasing = bool(layers) and set(layers) <= {1, 2, 3, 4} and layers == sorted(set(layers))
    return name, increasing, "must be increasing stages from 1-4, e.g. 1,2,3"


@dataclass
class BackboneConfig:
    """The frozen ResNet (``backbone.*``): architecture, weights spec, stages used."""

    name: BackboneName = "resnet18"
    #: "imagenet" (torchvision's weights, cached in TORCH_HOME), "none", or a state-dict path.
    weights: str = "imagenet"
    #: ResNet stages whose features are used (1-4); the study's "backbone depth".
    layers: tuple[int, ...] = (1, 2, 3)

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [stages_check("layers", self.layers)]


@dataclass
class MFRMConfig:
    """PAGMFR's multi-scale feature reconstruction module (``mfrm.*``)."""

    #: Which backbone scales enter the reconstruction decoder: all (a 1x1 lateral at every
    #: scale, U-Net/FPN-like: shallow scales can pass a defect straight through to their
    #: reconstruction) or deepest (the decoder starts from the deepest scale only and must
    #: reconstruct the shallower ones from it).
    skips: Literal["all", "deepest"] = "all"


@dataclass
class FusionConfig:
    """PAGMFR's multi-scale feature fusion module (``fusion.*``)."""

    #: MFFM: concat (channel concatenation + conv, as in the paper), add, or none (no module).
    mode: Literal["concat", "add", "none"] = "concat"
    channels: int = 64

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [("channels", self.channels >= 1, "must be >= 1")]


@dataclass
class AnomalyConfig:
    """How maps become anomaly scores (``anomaly.*``): branches, head, smoothing, score."""

    # The defaults of map_output, map_stats, map_norm and knn were chosen by measurement on
    # the embedded dataset, those of head_form, map_fusion and knn_coreset on the real MVTec AD
    # category at hand too (benchmarks/quality.py; README, "Quality").
    #: Which maps feed the anomaly head: feature (cosine), image (CIELAB + SSIM), or both.
    branches: Literal["feature", "image", "both"] = "both"
    #: The learned head: auto (learned when training sees pseudo-anomalies, else the mean of
    #: normalised branch maps), learned, or none.
    head: Literal["auto", "learned", "none"] = "auto"
    hidden: int = 32
    #: Gaussian smoothing of the anomaly map (pixels at model resolution; 0: off).
    smoothing_sigma: float = 4.0
    #: Image score: max of the map, or mean of its top-k pixels ...
    score: Literal["max", "topk"] = "max"
    topk: int = 100
    #: ... smoothed with this sigma first (pixels at model resolution; 0: unsmoothed, as
    #: PatchCore scores its patches before smoothing): the reported map's smoothing_sigma
    #: blurs a thin defect's peak into the normal texture's noise.
    score_sigma: float = 0.0
    #: PAGMFR's map (and so its score) before smoothing: the sigmoid of the head's logits, or
    #: the logits themselves. The sigmoid saturates: many test images tie at a score of ~1.
    map_output: Literal["sigmoid", "logits"] = "logits"
    #: Which training samples the branch maps' running mean/std (their z-scoring) is gathered
    #: on: all of them (half pseudo-anomalous by default), or only those left normal.
    map_stats: Literal["all", "normal"] = "normal"
    #: z-scoring per branch map with one mean/std each (global), or per map and pixel
    #: position (pixel: removes position-bound offsets such as a decoder's border artefacts,
    #: which every image shares; warm-started with cumulative averages, then updated like
    #: batch-norm statistics).
    map_norm: Literal["global", "pixel"] = "pixel"
    #: The learned head: an MLP from the z-scored maps (and fused features) to the logits
    #: (mlp), or a learned linear combination of the z-scored maps, starting as their mean,
    #: plus that MLP with its last layer starting at zero (residual): an untrained head then
    #: gives the unsupervised map, not a random projection of it, and training reweights the
    #: maps and corrects it from there.
    #: linear: that learned linear combination alone (no MLP; the fused features would have
    #: no consumer, so no MFFM is built): the head can reweight its evidence, not invert it
    #: through appearance features learned on the pseudo-anomalies.
    #: gated: the z-scored maps weighted at each pixel by positive weights that the MLP
    #: predicts from them and the fused features (starting as their mean), plus a learned
    #: offset: the fused features decide where to trust which evidence, but cannot invent or
    #: invert evidence.
    #: Default linear, by measurement on real MVTec AD (transistor, 25 epochs): the residual
    #: head's map fell from 0.93 to 0.84 pixel AUROC as it learned the pseudo-anomalies' look
    #: (gated: to 0.62), the linear head's stayed at 0.86-0.89 (README, "Quality").
    head_form: Literal["mlp", "residual", "linear", "gated"] = "linear"
    #: Normal-feature evidence: one more branch map, the nearest-neighbour distance of the
    #: input's patch features (PatchCore-style: 3x3-averaged frozen-backbone features of
    #: ``knn_layers``, resized to the finest and concatenated) to those of the clean training
    #: images, gathered once before training. A training image is scored against the other
    #: training images only (leave-one-image-out), as an unseen test image will be.
    knn: bool = True
    #: The anomaly map when the head is learned and ``knn`` is on: the head's output alone
    #: (head), or that output plus the patch memory's distances (as PatchCore scores them),
    #: each z-scored with its mean and std on the normal training samples (head+knn). The head
    #: learns from pseudo-anomalies, which real defects need not resemble, and the z-scored
    #: evidence inside it loses the distances' ranking (per-pixel z-scores: AU-PRO 0.49 where
    #: the distances give 0.60 on transistor): the evidence itself stays in the map.
    map_fusion: Literal["head", "head+knn"] = "head+knn"
    #: Backbone stages the patch features come from (must be among backbone.layers).
    knn_layers: tuple[int, ...] = (2, 3)
    #: Share of the training patches kept in memory (greedy k-centre coreset; 1: all): 10%, as
    #: PatchCore's. Every training step compares its patches with the whole memory: keeping
    #: all of them made a CPU epoch 4x as long (benchmarks/train_step.py).
    knn_coreset: float = 0.1
    #: At most this much memory (float32 entries; the coreset's greedy order is cut to fit),
    #: which checkpoints carry.
    knn_max_bank_mb: float = 64.0

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [
            ("hidden", self.hidden >= 1, "must be >= 1"),
            ("smoothing_sigma", self.smoothing_sigma >= 0.0, "must be >= 0"),
            ("score_sigma", self.score_sigma >= 0.0, "must be >= 0"),
            ("topk", self.topk >= 1, "must be >= 1"),
            stages_check("knn_layers", self.knn_layers),
            ("knn_coreset", 0.0 < self.knn_coreset <= 1.0, "must be in (0, 1]"),
            ("knn_max_bank_mb", self.knn_max_bank_mb > 0, "must be > 0"),
        ]


@dataclass
class LossConfig:
    """Loss weights (``loss.*``): image reconstruction, features, focal."""

    image_mse: float = 1.0
    image_ssim: float = 1.0
    feature: float = 1.0
    focal: float = 1.0
    focal_gamma: float = 2.0
    #: Class weight of defective pixels; -1 turns weighting off (as in DRAEM): defects are sparse.
    focal_alpha: float = -1.0

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        weights = ("image_mse", "image_ssim", "feature", "focal", "focal_gamma")
        return [(name, getattr(self, name) >= 0.0, "must be >= 0") for name in weights] + [
            ("focal_alpha", -1.0 <= self.focal_alpha <= 1.0, "must be in [-1, 1] (<0: off)")
        ]


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

    def checks(self) -> list[Check]:
        """Each knob's constraint as (field, holds, requirement)."""
        return [
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("lr", 0.0 < self.lr < 10.0, "must be in (0, 10)"),
            ("weight_decay", self.weight_decay >= 0.0, "must be >= 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, "must be >= 0"),
            ("grad_accumulation", self.grad_accumulation >= 1, "must be >= 1"),
            ("eval_every", self.eval_every >= 1, "must be >= 1"),
            ("seed", 0 <= self.seed <= MAX_SEED, f"must be in [0, {MAX_SEED}]"),
        ]


#: The sections every config has, in their flat-key order; methods may add their own.
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "generator": GeneratorConfig,
    "validation": ValidationConfig,
    "backbone": BackboneConfig,
    "mfrm": MFRMConfig,
    "fusion": FusionConfig,
    "anomaly": AnomalyConfig,
    "loss": LossConfig,
    "train": TrainConfig,
}


def _registry():
    """The model registry, imported on use: the built-in methods register when
    ``pagmfr.models`` is imported, and they import this module."""
    from pagmfr.models import registry

    return registry


def _method_sections() -> dict[str, type]:
    return _registry().method_sections()


@dataclass
class Config:
    """A run's full configuration: fixed sections plus each registered method's own, built and
    validated from dotted keys (:meth:`from_flat`, :meth:`with_overrides`)."""

    method: str = "pagmfr"
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    mfrm: MFRMConfig = field(default_factory=MFRMConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: The registered methods' own sections by name (``config.rgpkd`` reads one).
    method_settings: dict[str, Any] = field(
        default_factory=lambda: {name: cls() for name, cls in _method_sections().items()}
    )

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("method_settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def sections(self) -> dict[str, Any]:
        """Every section by name: the fixed ones, then the registered methods' own."""
        return {**{name: getattr(self, name) for name in SECTIONS}, **self.method_settings}

    def to_flat(self) -> dict[str, Any]:
        """``{"loss.focal": 1.0, ...}`` with tuples as lists: JSON- and MLflow-friendly."""
        flat: dict[str, Any] = {"method": self.method}
        for name, section in self.sections().items():
            for f in dataclasses.fields(section):
                item = getattr(section, f.name)
                flat[f"{name}.{f.name}"] = list(item) if isinstance(item, tuple) else item
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
        known = cls().to_flat()
        for key in flat:
            if key not in known:
                raise ValueError(_unknown_key_message(key, known))
        hints = _field_types()
        values: dict[str, dict[str, Any]] = {}
        method = "pagmfr"
        for key, value in flat.items():
            parsed = coerce(key, value, hints[key])
            if key == "method":
                method = parsed
            else:
                section, name = key.split(".", 1)
                values.setdefault(section, {})[name] = parsed
        classes = {**SECTIONS, **_method_sections()}
        built = {name: _build_section(name, classes[name], v) for name, v in values.items()}
        fixed = {name: built.pop(name) for name in list(built) if name in SECTIONS}
        settings = {name: cls_() for name, cls_ in _method_sections().items()}
        config = cls(method=method, method_settings={**settings, **built}, **fixed)
        config.validate()
        return config

    def validate(self) -> None:
        """Every section's checks and the cross-field rules, each error naming its key."""
        registry = _registry()
        if self.method not in registry.available_methods():
            raise ValueError(
                f"method must be one of {', '.join(registry.available_methods())}; "
                f"got {self.method!r} (register your own with pagmfr.models.register_model)"
            )
        flat = self.to_flat()
        for name, section in self.sections().items():
            for field_name, holds, requirement in getattr(section, "checks", list)():
                if not holds:
                    key = f"{name}.{field_name}"
                    raise ValueError(f"{key} {requirement}; got {flat[key]!r}")
        self._check_strategies()
        self._check_smoothing()
        anomaly = self.anomaly
        uses_knn = anomaly.knn and self.method == "pagmfr"  # other methods ignore anomaly.knn
        if uses_knn and not set(anomaly.knn_layers) <= set(self.backbone.layers):
            raise ValueError(
                f"anomaly.knn_layers must be among backbone.layers ({self.backbone.layers}) when "
                f"anomaly.knn is on; got {anomaly.knn_layers} (set anomaly.knn_layers to some of "
                "the backbone's stages, or anomaly.knn=false)"
            )
        if self.anomaly.head == "learned" and not self.trains_on_pseudo_anomalies:
            raise ValueError(
                "anomaly.head learned needs pseudo-anomalies in training; got method "
                f"{self.method!r} with generator.strategy {self.generator.strategy!r}"
            )

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
        return _registry().method_spec(self.method).default_scheduler

    @property
    def uses_pseudo_anomalies(self) -> bool:
        """Whether the method's training batches carry pseudo-anomalies (RGPKD distils on
        normal images only, so its loader need not make them)."""
        return _registry().method_spec(self.method).uses_pseudo_anomalies

    @property
    def trains_on_pseudo_anomalies(self) -> bool:
        """Pseudo-anomalies actually reach training: the method uses them and the generator
        makes them. Without them there is nothing for a learned anomaly head to learn."""
        return self.uses_pseudo_anomalies and self.generator.strategy != "none"


def _upgraded(flat: dict[str, Any]) -> dict[str, Any]:
    """Earlier versions chose the epoch with ``validation.metric`` on validation, or on the
    test split with ``validation.select_on_test``: the same choice as ``validation.select``."""
    if "validation.metric" not in flat and "validation.select_on_test" not in flat:
        return flat
    flat = dict(flat)
    metric = flat.pop("validation.metric", "au_pro")
    on_test = coerce(
        "validation.select_on_test", flat.pop("validation.select_on_test", False), bool
    )
    flat.setdefault("validation.select", f"{'test' if on_test else 'val'}_{metric}")
    return flat


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    try:
        return cls(**values)
    except ValueError as err:  # a section's own __post_init__ check: name the full key
        raise ValueError(f"{name}.{err}") from None


def _field_types() -> dict[str, Any]:
    hints = {"method": str}
    for name, cls in {**SECTIONS, **_method_sections()}.items():
        for field_name, hint in typing.get_type_hints(cls).items():
            if not field_name.startswith("_"):
                hints[f"{name}.{field_name}"] = hint
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
