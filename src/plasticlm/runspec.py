"""The runs of a study: one expansion of the study config into run specs.

``expand(cfg)`` is the only place that knows the study's axes. Plan (``plan.plan_study``), the sweep
(``sweep.run_sweep``), the dry run (``study.dry_run``) and the records the report reads all start
from its list. Axes today: ``sweep.presets`` x ``sweep.seeds`` x the study's stream (plus a
stationary twin of the presets in ``sweep.stationary_presets`` when ``sweep.stationary``). A run's
tags also carry ``method`` (None today), the place of a mitigation axis: a run with a method is
named ``<preset>-s<seed>-<stream>-<method>``, one without keeps ``<preset>-s<seed>-<stream>``.

Which runs' onsets enter the scaling-law fit is one rule, ``in_scaling_fit``: the runs on the
study's own stream (``stream.kind``), not its stationary control.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticlm.config import BASELINE_METHOD, Config, from_dict, to_dict


@dataclass(frozen=True)
class RunTags:
    """What distinguishes one run of a study from the others."""

    preset: str
    seed: int
    stream: str
    method: str | None = None
    """The run's method on a method axis (``sweep.methods``: "baseline" or a mitigation); None without one."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: its name, the dotted config keys set for it, its tags and its config."""

    name: str
    overrides: dict[str, Any]
    """Dotted keys (``model.preset``, ``train.seed``...) -> the value this run sets on the study config."""
    tags: RunTags
    cfg: Config

    @property
    def preset(self) -> str:
        return self.tags.preset

    @property
    def seed(self) -> int:
        return self.tags.seed

    @property
    def stream(self) -> str:
        return self.tags.stream

    @property
    def method(self) -> str | None:
        return self.tags.method

    def run_dir(self, study_dir: Path) -> Path:
        return study_dir / "runs" / self.name


def run_name(tags: RunTags) -> str:
    """``<preset>-s<seed>-<stream>``, with ``-<method>`` appended when the run has one."""
    base = f"{tags.preset}-s{tags.seed}-{tags.stream}"
    return base if tags.method is None else f"{base}-{tags.method}"


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    if "." not in dotted:  # a whole table (mitigations)
        d[dotted] = value
        return
    section, key = dotted.split(".")
    d[section][key] = value


def _overrides(cfg: Config, tags: RunTags) -> dict[str, Any]:
    """The keys a run sets: its size and seed, and for a stationary twin its stream and probe schedule.

    A twin's sweep keys are reset (a run config describes one run). With
    ``sweep.stationary_probe_every_tokens`` > 0 the twin is probed every that many tokens and only
    then (arXiv:2606.24752, "Stationary control": every 5B); otherwise at its continual twin's points."""
    out: dict[str, Any] = {"model.preset": tags.preset, "model.depth": 0, "train.seed": tags.seed}
    if tags.stream != cfg.stream.kind:
        out.update({"stream.kind": tags.stream, "sweep.stationary": False, "sweep.stationary_presets": [],
                    "sweep.stationary_probe_every_tokens": 0})
        every = cfg.sweep.stationary_probe_every_tokens
        if every > 0:
            out.update({"probe.every_tokens": every, "probe.at_cycle_end": False, "probe.after_languages": []})
    if tags.method is not None:  # the method's own table, alone (the study's tables are one per method)
        table = {} if tags.method == BASELINE_METHOD else {tags.method: cfg.mitigations[tags.method]}
        out.update({"mitigations": table, "sweep.methods": []})
    return out


def expand(cfg: Config) -> list[RunSpec]:
    """Every run of the study ``cfg``, in the order they are planned, trained and reported.

    Presets x seeds x methods (``sweep.methods``, when set) x (the study's stream [+ a stationary
    twin]); the twin exists for a continual study with ``sweep.stationary``, on
    ``sweep.stationary_presets`` ([] = every preset): the paper's control (arXiv:2606.24752,
    "Stationary control": 5M, 12M and 27M); with a method axis for the baseline only."""
    sw = cfg.sweep
    twins = set(sw.stationary_presets or sw.presets) if sw.stationary and cfg.stream.kind == "continual" else set()
    specs = []
    for preset in sw.presets:
        for seed in sw.seeds:
            for method, stream in _method_streams(cfg, preset in twins):
                tags = RunTags(preset, seed, stream, method)
                overrides = _overrides(cfg, tags)
                d = to_dict(cfg)
                for key, value in overrides.items():
                    _set(d, key, value)
                specs.append(RunSpec(run_name(tags), overrides, tags, from_dict(d, f"sweep {preset} {stream}")))
    return specs


def _method_streams(cfg: Config, twin: bool) -> list[tuple[str | None, str]]:
    """(method, stream) of one preset and seed: each method on the study's stream, the twin's stream
    for the baseline (or the run without a method axis)."""
    methods: list[str | None] = list(cfg.sweep.methods) or [None]
    out = []
    for method in methods:
        out.append((method, cfg.stream.kind))
        if twin and method in (None, BASELINE_METHOD):
            out.append((method, "stationary"))
    return out


def in_scaling_fit(stream: str | None, cfg: Config, method: str | None = None) -> bool:
    """Whether a run on ``stream`` with ``method`` belongs to the scaling-law fit of the study ``cfg``:
    the one rule of the sweep, the report and ``records.fit_points`` (the study's own stream without a
    mitigation, not its stationary control)."""
    return stream == cfg.stream.kind and method in (None, BASELINE_METHOD)
