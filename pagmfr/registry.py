"""The method registry: the only place that knows which methods exist.

``register_model("name", factory, settings=...)`` (or ``@register_model("name")`` on a class)
makes a method selectable everywhere: the config's ``method`` key and its settings' keys, the
CLI's ``--method`` choices, the schedule that ``train.scheduler=auto`` picks. The built-in
methods are registered here, on first use, so the config can ask which methods exist without
importing them (and torch) when it is imported.

A method's settings are a dataclass: its fields are the keys ``<name>.<field>``, unless a field
names its own key (:func:`pagmfr.settings.setting`) or holds a nested settings dataclass (keys
``<field>.<sub>``). Two methods may declare the same key (PAGMFR and RGPKD both weigh their
reconstruction with ``loss.image_mse``) if they agree on its type and default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pagmfr.settings import keys_of

if TYPE_CHECKING:
    from pagmfr.config import Config
    from pagmfr.models.base import AnomalyMethod

MethodFactory = Callable[["Config"], "AnomalyMethod"]
ConfigCheck = Callable[["Config"], None]

#: The method a config without a ``method`` key runs.
DEFAULT_METHOD = "pagmfr"


def _no_rules(config: Config) -> None:
    """A method without cross-field rules."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: how to build it and what the config needs to know before it is
    built."""

    name: str
    factory: MethodFactory
    default_scheduler: str
    uses_pseudo_anomalies: bool
    #: A dataclass of the method's own knobs (see the module docstring), or None.
    settings: type | None = None
    #: The method's cross-field rules on a whole config (it raises ValueError naming the key).
    check: ConfigCheck = _no_rules
    #: What was registered (the class or the function): its source file is the method's code.
    origin: Any = None

    @property
    def builtin(self) -> bool:
        """Whether pagmfr itself registers this method (workers have it already)."""
        return getattr(self.origin, "__module__", "").startswith("pagmfr.")


_METHODS: dict[str, MethodSpec] = {}
_generation = 0  # counts registrations: what the config caches of the registry is per value


def register_model(
    name: str,
    factory: Any = None,
    *,
    settings: type | None = None,
    default_scheduler: str | None = None,
    uses_pseudo_anomalies: bool | None = None,
    check: ConfigCheck | None = None,
    replace: bool = False,
) -> Any:
    """Register a method as ``name``: a class (built with its ``from_config(config)`` when it
    has one, else with ``cls(config)``) or a function ``factory(config) -> AnomalyMethod``; use
    it directly or as a class decorator. The schedule, pseudo-anomaly needs and cross-field
    rules (``check_config``) default to the class's attributes (see ``AnomalyMethod``). A taken
    name is refused unless ``replace``."""

    def register(target: Any) -> Any:
        global _generation
        _load_builtins()
        if name in _METHODS and not replace:
            raise ValueError(f"method {name!r} is already registered; pass replace=True")
        if not name.isidentifier():
            raise ValueError(f"method name {name!r} must be an identifier (it names a section)")
        source = target if isinstance(target, type) else None
        previous = _METHODS.get(name)
        _METHODS[name] = MethodSpec(
            name,
            getattr(source, "from_config", target),
            default_scheduler or getattr(source, "default_scheduler", "cosine"),
            bool(getattr(source, "uses_pseudo_anomalies", False))
            if uses_pseudo_anomalies is None
            else uses_pseudo_anomalies,
            settings,
            check or getattr(source, "check_config", _no_rules),
            target,
        )
        _generation += 1
        try:
            _refuse_conflicting_keys(name)
        except ValueError:
            if previous is None:  # the registration is undone, a replaced method restored
                del _METHODS[name]
            else:
                _METHODS[name] = previous
            raise
        return target

    return register if factory is None else register(factory)


def _refuse_conflicting_keys(name: str) -> None:
    """A key two methods declare must mean the same to both: same type, same default."""
    settings = _METHODS[name].settings
    if settings is None:
        return
    for other, spec in _METHODS.items():
        if other == name or spec.settings is None:
            continue
        theirs = keys_of(spec.settings, other)
        for key, mine in keys_of(settings, name).items():
            if key in theirs and (mine.hint, mine.default) != (
                theirs[key].hint,
                theirs[key].default,
            ):
                raise ValueError(
                    f"method {name!r} declares {key} as {mine.hint} = {mine.default!r}, but "
                    f"{other!r} declares it as {theirs[key].hint} = {theirs[key].default!r}: "
                    "a shared key needs one type and default (or give yours another key)"
                )


_BUILTINS_LOADED = False


def _load_builtins() -> None:
    """Register the built-in methods, once, on first use of the registry."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True  # first: registering them comes back here
    try:
        from pagmfr.models.pagmfr import PAGMFR, PAGMFRSettings
        from pagmfr.models.patchcore import PatchCore, PatchCoreSettings
        from pagmfr.models.rgpkd import RGPKD, RGPKDSettings

        register_model("pagmfr", PAGMFR, settings=PAGMFRSettings)
        register_model("rgpkd", RGPKD, settings=RGPKDSettings)
        register_model("patchcore", PatchCore, settings=PatchCoreSettings)
    except BaseException:
        _BUILTINS_LOADED = False  # the next use tries again, and says why it fails
        raise


def generation() -> int:
    """A number that changes whenever a method is registered."""
    _load_builtins()
    return _generation


def available_methods() -> list[str]:
    """The registered method names, sorted."""
    _load_builtins()
    return sorted(_METHODS)


def method_spec(name: str) -> MethodSpec:
    """The registration of ``name``, or an error listing the available methods."""
    _load_builtins()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _METHODS[name]


def method_settings() -> dict[str, type]:
    """The registered methods' settings dataclasses, by method name."""
    _load_builtins()
    return {name: spec.settings for name, spec in _METHODS.items() if spec.settings is not None}


def user_methods() -> list[MethodSpec]:
    """Methods registered from outside pagmfr (a user's script): a study ships these to its
    workers, which have only imported pagmfr."""
    _load_builtins()
    return [spec for spec in _METHODS.values() if not spec.builtin]


def ensure_registered(specs: list[MethodSpec]) -> None:
    """Register ``specs`` in this process (a study worker) where their names are free."""
    global _generation
    _load_builtins()
    for spec in specs:
        if spec.name not in _METHODS:
            _METHODS[spec.name] = spec
            _generation += 1
