"""Plasticity mitigations: one module per method, a registry by name.

``REGISTRY[name] = (ConfigClass, factory)``; ``factory(cfg, seed) -> Mitigation``. A run enables
methods with one table per method (``[mitigations.cbp]`` in TOML, ``--set
mitigations.cbp.replacement_rate=1e-5``); ``parse_mitigations`` turns that table into typed,
validated configs (unknown methods and keys are errors, all listed at once) and ``build_all`` into
mitigations in the registry's fixed order, which is the order their hooks run in:

    replay, l2_init, upgd, selective_reinit, cbp, redo, shrink_perturb, fire, weight_clip

UPGD comes first among the post-step rules because it re-composes the optimizer's step from the
weights before it; resets come next; weight clipping comes last so that its bound holds after every
other change. The hooks and their place in a training step: ``plasticlm.mitigations.base``.

Each method has a no-op setting (``ConfigClass.NOOP``) under which training is bit-identical to a
run without it. The training loop runs them through one loop component, ``mitigations``
(``plasticlm.components.mitigations``), which maps these hooks onto the loop's.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from plasticlm.config import _from_dict
from plasticlm.errors import ConfigError
from plasticlm.mitigations.base import Mitigation, MitigationConfig, config_rows
from plasticlm.mitigations.cbp import CBP, CBPConfig
from plasticlm.mitigations.fire import FIRE, FIREConfig
from plasticlm.mitigations.l2_init import L2Init, L2InitConfig
from plasticlm.mitigations.redo import ReDo, ReDoConfig
from plasticlm.mitigations.replay import Replay, ReplayConfig
from plasticlm.mitigations.selective_reinit import SelectiveReinit, SelectiveReinitConfig
from plasticlm.mitigations.shrink_perturb import ShrinkPerturb, ShrinkPerturbConfig
from plasticlm.mitigations.upgd import UPGD, UPGDConfig
from plasticlm.mitigations.weight_clip import WeightClip, WeightClipConfig

REGISTRY: dict[str, tuple[type[MitigationConfig], type[Mitigation]]] = {
    "replay": (ReplayConfig, Replay),
    "l2_init": (L2InitConfig, L2Init),
    "upgd": (UPGDConfig, UPGD),
    "selective_reinit": (SelectiveReinitConfig, SelectiveReinit),
    "cbp": (CBPConfig, CBP),
    "redo": (ReDoConfig, ReDo),
    "shrink_perturb": (ShrinkPerturbConfig, ShrinkPerturb),
    "fire": (FIREConfig, FIRE),
    "weight_clip": (WeightClipConfig, WeightClip),
}
"""Every method by name, in the order their hooks run."""

__all__ = ["REGISTRY", "Mitigation", "MitigationConfig", "build", "build_all", "describe_methods",
           "parse_config", "parse_mitigations"]


def _unknown_method(name: str) -> str:
    close = difflib.get_close_matches(name, list(REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown mitigation {name!r}{hint}; known: {', '.join(REGISTRY)} (see `plasticlm mitigations`)"


def _parse(name: str, values: Any, problems: list[str]) -> MitigationConfig | None:
    if name not in REGISTRY:
        problems.append(_unknown_method(name))
        return None
    if not isinstance(values, Mapping):
        problems.append(f"mitigations.{name} must be a table of settings (e.g. [mitigations.{name}]), got {values!r}")
        return None
    before = len(problems)
    cfg = _from_dict(REGISTRY[name][0], dict(values), f"mitigations.{name}", problems)
    if len(problems) > before:
        return None
    problems += [f"mitigations.{name}.{p}" for p in cfg.validate()]
    return cfg if len(problems) == before else None


def parse_config(name: str, values: Mapping[str, Any] | None = None) -> MitigationConfig:
    """The typed config of one method from its settings (defaults for the keys not given).
    Raises ConfigError naming every unknown key, wrong type and out-of-range value."""
    problems: list[str] = []
    cfg = _parse(name, values or {}, problems)
    if problems:
        raise ConfigError(problems, f"mitigations.{name}")
    return cfg


def parse_mitigations(table: Mapping[str, Any] | None) -> dict[str, MitigationConfig]:
    """{name: config} for a ``[mitigations]`` table ({method: {key: value}}), in registry order."""
    problems: list[str] = []
    parsed = {name: _parse(name, values, problems) for name, values in (table or {}).items()}
    if problems:
        raise ConfigError(problems, "mitigations")
    return {name: parsed[name] for name in REGISTRY if name in parsed}


def build(name: str, cfg: MitigationConfig | Mapping[str, Any] | None = None, seed: int = 0) -> Mitigation:
    """One mitigation from its config (or its settings as a mapping); ``seed`` is the run's seed."""
    if not isinstance(cfg, MitigationConfig):
        cfg = parse_config(name, cfg)
    cls = REGISTRY[name][0] if name in REGISTRY else None
    if cls is None or not isinstance(cfg, cls):
        raise ConfigError([_unknown_method(name) if cls is None else
                           f"mitigations.{name} needs a {cls.__name__}, got {type(cfg).__name__}"], "mitigations")
    return REGISTRY[name][1](cfg, seed)


def build_all(table: Mapping[str, Any] | None, seed: int = 0) -> list[Mitigation]:
    """The mitigations of a ``[mitigations]`` table, in hook order."""
    return [build(name, cfg, seed) for name, cfg in parse_mitigations(table).items()]


def describe_methods() -> list[dict[str, Any]]:
    """Per method: name, summary, citation, parameters (key, type, default, help), no-op setting."""
    rows = []
    for name, (cls, _) in REGISTRY.items():
        rows.append({"name": name, "summary": cls.SUMMARY, "citation": cls.CITATION,
                     "params": config_rows(cls), "noop": dict(cls.NOOP), "noop_note": cls.NOOP_NOTE})
    return rows
