"""The one registry of loop components, and building a run's components from its config.

A run's components are ``train.components``, in firing order. Each entry is a registered name
(``plasticlm components`` lists them), or ``package.module:name`` for a component registered by a
module outside plasticlm (the module is imported, which registers it). A component's options come
from the ``[components.<name>]`` table of the config, checked against the component's options
dataclass (unknown keys and wrong types are errors, as everywhere in the config).

Adding a component is one new file with a ``@register`` class, plus its import in
``components/__init__.py`` (built-in) or its module named in ``train.components`` (outside)::

    @dataclass
    class ToyOptions:
        every: int = 1

    @register("toy", options=ToyOptions)
    class Toy(Component):
        def __init__(self, loop: LoopView, options: ToyOptions): ...

The constructor gets the component's ``LoopView`` and its options (None without an options class);
it may return a component that does nothing when the config leaves it off.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plasticlm.components.base import Component, LoopView
from plasticlm.config import Config, parse_section
from plasticlm.errors import ConfigError
from plasticlm.validate import add_config_check

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.train import Trainer

Factory = Callable[[LoopView, Any], Component]


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Factory
    options: type | None
    doc: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, options: type | None = None) -> Callable[[Factory], Factory]:
    """Register a component class (or factory) under ``name``; ``options`` is its options dataclass."""
    if options is not None and not dataclasses.is_dataclass(options):
        raise TypeError(f"component {name!r}: options must be a dataclass, got {options!r}")

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"a component named {name!r} is registered already ({_REGISTRY[name].factory!r})")
        doc = " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split())
        _REGISTRY[name] = Entry(name, factory, options, doc)
        return factory

    return deco


def registered() -> dict[str, Entry]:
    """Registered components by name (built-in and any imported since)."""
    return dict(_REGISTRY)


def resolve(spec: str) -> Entry:
    """The entry of a ``train.components`` item: a registered name or ``package.module:name``."""
    if ":" in spec:
        module, _, name = spec.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError([f"train.components: {spec!r}: cannot import {module!r} ({e}); is it on the "
                               "Python path (PYTHONPATH or an installed package)?"], "config") from None
    else:
        name = spec
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError([f"train.components: {spec!r} is not a registered component (registered: {known}); "
                           "`plasticlm components` lists them"], "config")
    return _REGISTRY[name]


def component_problems(cfg: Config) -> list[str]:
    """Everything wrong with ``train.components`` and ``[components.*]``, without building anything."""
    problems: list[str] = []
    names = []
    for spec in cfg.train.components:
        try:
            entry = resolve(spec)
        except ConfigError as e:
            problems += e.problems
            continue
        names.append(entry.name)
        table = cfg.components.get(entry.name, {})
        if entry.options is None and table:
            problems.append(f"[components.{entry.name}]: component {entry.name!r} takes no options")
        elif entry.options is not None:
            problems += parse_section(entry.options, table, f"components.{entry.name}")[1]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"train.components: {repeated} listed more than once; each component runs once")
    unused = sorted(set(cfg.components) - set(names))
    if unused:
        problems.append(f"[components.{unused[0]}]: options for a component that train.components does not list "
                        f"(listed: {', '.join(cfg.train.components)}); add it there or remove the table")
    return problems


add_config_check(component_problems)


def build_components(trainer: Trainer, cfg: Config) -> list[tuple[Component, LoopView]]:
    """The run's components from ``train.components``, in that order, each with its view."""
    problems = component_problems(cfg)
    if problems:
        raise ConfigError(problems, "config")
    out = []
    for spec in cfg.train.components:
        entry = resolve(spec)
        options = None
        if entry.options is not None:
            options = parse_section(entry.options, cfg.components.get(entry.name, {}), f"components.{entry.name}")[0]
        view = LoopView(trainer, entry.name)
        component = entry.factory(view, options)
        component.name = entry.name
        out.append((component, view))
    return out
