"""The method registry: the only place a method is named.

``register_model("name", factory)`` (or ``@register_model("name")`` on a class) makes a method
selectable everywhere: the config's ``method`` key, the CLI's ``--method`` choices, the
schedule that ``train.scheduler=auto`` picks, and its own config section (``name.*``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pagmfr.models.base import AnomalyMethod

if TYPE_CHECKING:
    from pagmfr.config import Config

MethodFactory = Callable[["Config"], AnomalyMethod]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: how to build it and what the config needs to know before it is
    built."""

    name: str
    factory: MethodFactory
    default_scheduler: str
    uses_pseudo_anomalies: bool
    #: A dataclass of the method's own knobs: the config section ``<name>.*`` (or None).
    settings: type | None = None

    @property
    def builtin(self) -> bool:
        """Whether pagmfr itself registers this method (workers have it already)."""
        return getattr(self.factory, "__module__", "").startswith("pagmfr.")


_METHODS: dict[str, MethodSpec] = {}


def register_model(
    name: str,
    factory: MethodFactory | None = None,
    *,
    settings: type | None = None,
    default_scheduler: str | None = None,
    uses_pseudo_anomalies: bool | None = None,
    replace: bool = False,
) -> Any:
    """Register ``factory(config) -> AnomalyMethod`` as method ``name``; use it directly or as
    a class decorator. The schedule and pseudo-anomaly needs default to the factory's class
    attributes (see :class:`AnomalyMethod`). A taken name is refused unless ``replace``."""

    def register(target: MethodFactory) -> MethodFactory:
        if name in _METHODS and not replace:
            raise ValueError(f"method {name!r} is already registered; pass replace=True")
        if not name.isidentifier():
            raise ValueError(f"method name {name!r} must be an identifier (it names a section)")
        source = target if isinstance(target, type) else AnomalyMethod
        _METHODS[name] = MethodSpec(
            name,
            target,
            default_scheduler or source.default_scheduler,
            source.uses_pseudo_anomalies
            if uses_pseudo_anomalies is None
            else uses_pseudo_anomalies,
            settings,
        )
        return target

    return register if factory is None else register(factory)


def available_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_METHODS)


def method_spec(name: str) -> MethodSpec:
    """The registration of ``name``, or an error listing the available methods."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _METHODS[name]


def method_sections() -> dict[str, type]:
    """The registered methods' own config sections, by method name."""
    return {name: spec.settings for name, spec in _METHODS.items() if spec.settings is not None}


def user_methods() -> list[MethodSpec]:
    """Methods registered from outside pagmfr (a user's script): a study ships these to its
    workers, which have only imported pagmfr."""
    return [spec for spec in _METHODS.values() if not spec.builtin]


def ensure_registered(specs: list[MethodSpec]) -> None:
    """Register ``specs`` in this process (a study worker) where their names are free."""
    for spec in specs:
        _METHODS.setdefault(spec.name, spec)


def build_model(config: Config, load_weights: bool = True) -> AnomalyMethod:
    """Build the configured method with its frozen backbone weights loaded.

    Args:
        config: a validated config; ``config.method`` names a registered method.
        load_weights: load every frozen backbone's weights from ``backbone.weights``
            ("imagenet", "none" or a state-dict path); False when a checkpoint will supply
            every weight.

    Returns:
        The method, on the CPU, in training mode.
    """
    from pagmfr.models.backbone import ResNetFeatures, load_backbone_weights

    model = method_spec(config.method).factory(config)
    if not isinstance(model, AnomalyMethod):
        raise TypeError(
            f"method {config.method!r} built a {type(model).__name__}; a method must subclass "
            "pagmfr.models.AnomalyMethod"
        )
    if load_weights:
        for module in model.modules():
            if isinstance(module, ResNetFeatures):
                load_backbone_weights(module, config.backbone.weights)
    return model
