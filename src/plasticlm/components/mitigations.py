"""The plasticity mitigations (``plasticlm.mitigations``) as one loop component, ``mitigations``.

A run enables methods with one ``[mitigations.<method>]`` table each (``--set
mitigations.cbp.replacement_rate=1e-5``); the tables are typed and checked when the config is
loaded (``mitigation_problems``, registered with the config checks, so ``plasticlm config validate``
refuses what a run would). The component builds the enabled methods in the registry's order, each
seeded from ``train.seed`` and its name (its own generator: never torch's global RNG), and maps
their hooks onto the loop's:

    Mitigation hook           loop hook (components/base.py)
    on_fit_start              on_fit_start (after a restore, so saved state is already loaded)
    on_task_start             on_task_start (after task_reset has reset the optimizer state)
    on_step_start(batch)      on_step_start(batch)
    loss_term                 on_after_backward: the terms' gradient is added to the step's
                              gradient before clipping, once per optimizer step; train/loss (the
                              data loss) is logged as without it
    pre_optim_step            pre_optim_step (gradients clipped, weights not yet updated)
    post_optim_step(step)     on_step_end (after the optimizer step; step = optimizer steps done)
    on_task_end               on_task_end
    close                     on_fit_end

ReDo's held-out reference batch (``redo.batch = "held_out"``) is ``train.batch_size`` fixed
validation windows of the current task's language (of every training language, in equal parts, on a
stationary stream), set at every task start. A method that needs run settings changed before the
stream and the LR schedule are built (replay: ``Mitigation.config_overrides``) gets them through
``run_config``, which the trainer applies to its stream and schedule only: the probe keeps the
configured recipe, so that every method of a comparison is probed alike. A key the config sets to a
value other than its default and other than the method's is an error, never silently overridden.

With a method axis (``sweep.methods``, ``plasticlm compare``) the study config's tables are the
settings of each method's runs (``runspec.expand`` gives each run its own table); training the
study config itself, with all tables on at once, is refused.

The methods' states (utilities, ages, initial weights, generators) are this component's state,
saved in the checkpoint's components.pt; counters per task go to ``mitigations.jsonl``, and the
methods, their settings and extra FLOPs per step to run.json (``mitigations``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from plasticlm.components.base import Batch, Component, LoopView
from plasticlm.components.registry import register
from plasticlm.config import BASELINE_METHOD as BASELINE
from plasticlm.config import Config
from plasticlm.config import _default as default_value
from plasticlm.errors import ConfigError, PlasticError
from plasticlm.evaluate import fixed_windows
from plasticlm.mitigations import REGISTRY, Mitigation, build_all, parse_mitigations
from plasticlm.mitigations.redo import ReDo
from plasticlm.validate import add_config_check

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.data.stream import Task

COUNTERS = {"cbp": "replaced_total", "redo": "resets", "selective_reinit": "reinit_total"}
"""The running count each resetting method keeps, written per task to mitigations.jsonl."""


def mitigation_overrides(cfg: Config) -> dict[str, Any]:
    """The run settings (dotted keys) the enabled methods need before the stream and schedule are
    built (``Mitigation.config_overrides``), in hook order; {} without such a method."""
    out: dict[str, Any] = {}
    for name, mcfg in parse_mitigations(cfg.mitigations).items():
        out.update(REGISTRY[name][1](mcfg, 0).config_overrides())
    return out


def _override_conflicts(cfg: Config, overrides: dict[str, Any]) -> list[str]:
    problems = []
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        now = getattr(getattr(cfg, section), key)
        if now != value and now != default_value(dotted):
            problems.append(f"{dotted} = {now!r}, but a [mitigations] method sets it to {value!r} (replay's "
                            "settings: `plasticlm mitigations`); remove one of the two")
    return problems


def run_config(cfg: Config) -> Config:
    """``cfg`` with the enabled methods' overrides (``mitigation_overrides``) applied, for the
    trainer's stream and LR schedule; ``cfg`` itself when no method needs any."""
    overrides = mitigation_overrides(cfg)
    if not overrides:
        return cfg
    if conflicts := _override_conflicts(cfg, overrides):
        raise ConfigError(conflicts, "mitigations")
    sections: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        sections.setdefault(section, {})[key] = value
    return dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s), **kv) for s, kv in sections.items()})


def mitigation_problems(cfg: Config) -> list[str]:
    """Everything wrong with ``[mitigations]`` and ``sweep.methods``, without building anything."""
    problems: list[str] = []
    try:
        parse_mitigations(cfg.mitigations)
    except ConfigError as e:
        return e.problems
    methods = cfg.sweep.methods
    if methods:
        unknown = [m for m in methods if m != BASELINE and m not in cfg.mitigations]
        if unknown:
            problems.append(f"sweep.methods has {unknown} without a [mitigations.<method>] table: add the table "
                            f"(e.g. [mitigations.{unknown[0]}], empty for the defaults) or use {BASELINE!r} for "
                            "no mitigation")
        if len(set(methods)) != len(methods):
            problems.append(f"sweep.methods has duplicates: {methods}")
        unused = sorted(set(cfg.mitigations) - set(methods))
        if unused:
            problems.append(f"[mitigations.{unused[0]}] is not in sweep.methods {methods}: with a method axis each "
                            "table is one method's settings; add it to sweep.methods or remove the table")
    if cfg.mitigations and "mitigations" not in cfg.train.components:
        problems.append(f"[mitigations.{next(iter(cfg.mitigations))}] is set but train.components does not list "
                        "'mitigations' (the component that runs them): add it after 'task_reset'")
    if not methods and not problems:
        problems += _override_conflicts(cfg, mitigation_overrides(cfg))
        if "stream.replay_fraction" in mitigation_overrides(cfg) and cfg.stream.kind != "continual":
            problems.append(f"mitigations.replay.fraction > 0 replays earlier languages of a continual stream; this "
                            f"stream is {cfg.stream.kind!r}: remove [mitigations.replay] or set its fraction to 0")
    return problems


add_config_check(mitigation_problems)


def held_out_batch(loop: LoopView, task: Task) -> np.ndarray:
    """ReDo's reference inputs for ``task``: ``train.batch_size`` fixed validation windows of the
    task's language (split evenly over the training languages where the task has none of its own:
    a stationary segment; permuted like the task on a permuted stream), without the last token."""
    cfg, stream = loop.cfg, loop.stream
    langs = [task.lang] if task.lang in loop.data.val else list(stream.sources)
    n = cfg.train.batch_size
    parts = [fixed_windows(loop.data.val[lang], max(1, n // len(langs) + (i < n % len(langs))), cfg.model.seq_len)
             for i, lang in enumerate(langs)]
    windows = np.concatenate(parts)[:n]
    if stream.kind == "permuted":
        windows = stream.permutation(task.index)[windows]
    return windows[:, :-1]


@register("mitigations")
class Mitigations(Component):
    """Plasticity mitigations (``plasticlm mitigations``): the methods of the [mitigations.<method>]
    tables, in a fixed order, at the loop's hooks; nothing without a table."""

    def __init__(self, loop: LoopView, options: None = None):
        cfg = loop.cfg
        if cfg.sweep.methods and cfg.mitigations:
            raise PlasticError(
                f"this config has a method axis (sweep.methods = {cfg.sweep.methods}): its [mitigations.*] tables are "
                "the settings of one method each, not all on at once. Run `plasticlm compare CONFIG` (or `plasticlm "
                "sweep`); to train them together anyway, add --set sweep.methods=[]")
        self.methods: list[Mitigation] = build_all(cfg.mitigations, seed=cfg.train.seed)
        if self.methods and loop.strategy == "fsdp":  # DDP: every rank applies them alike to the full weights
            raise PlasticError(f"mitigations {[m.name for m in self.methods]} work on whole parameters in place and "
                               "do not support dist.strategy = 'fsdp' (sharded parameters): use "
                               "--set dist.strategy=ddp, or run without [mitigations]")
        if loop.strategy == "ddp":
            problems = ddp_problems(self.methods)
            if problems:
                raise PlasticError("; ".join(problems))
        self.log = loop.open_log("mitigations.jsonl") if self.methods else None

    def _each(self, hook: str, *args: Any) -> None:
        for m in self.methods:
            getattr(m, hook)(*args)

    def on_fit_start(self, loop: LoopView) -> None:
        if not self.methods:
            return
        self._each("on_fit_start", loop.model, loop.optimizer)
        loop.update_run_info(mitigations=describe_run(self.methods, loop))

    def on_task_start(self, loop: LoopView, task: Task) -> None:
        for m in self.methods:
            if isinstance(m, ReDo) and m.cfg.batch == "held_out" and m.cfg.every > 0:
                m.set_held_out(held_out_batch(loop, task))
        self._each("on_task_start", loop.model, loop.optimizer, task)

    def on_step_start(self, loop: LoopView, batch: Batch) -> None:
        self._each("on_step_start", batch)

    def on_after_backward(self, loop: LoopView) -> None:
        terms = [t for m in self.methods if (t := m.loss_term(loop.model)) is not None]
        if terms:
            torch.stack([t.float() for t in terms]).sum().backward()

    def pre_optim_step(self, loop: LoopView) -> None:
        self._each("pre_optim_step", loop.model, loop.optimizer)

    def on_step_end(self, loop: LoopView, loss: float) -> None:
        self._each("post_optim_step", loop.model, loop.optimizer, loop.step)

    def on_task_end(self, loop: LoopView, task: Task) -> None:
        self._each("on_task_end", loop.model, loop.optimizer, task)
        if self.log is not None:
            counts = {m.name: int(getattr(m, COUNTERS[m.name])) for m in self.methods if m.name in COUNTERS}
            self.log.append({"task_index": task.index, "step": loop.step, **counts})

    def on_fit_end(self, loop: LoopView) -> None:
        self._each("close")

    def state_dict(self) -> dict[str, Any]:
        return {"methods": {m.name: m.state_dict() for m in self.methods}} if self.methods else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("methods", {})
        names = [m.name for m in self.methods]
        if sorted(saved) != sorted(names):
            raise PlasticError(f"the checkpoint holds the state of mitigations {sorted(saved)}, the config enables "
                               f"{names}: resume with the [mitigations] tables the run was started with")
        for m in self.methods:
            m.load_state_dict(saved[m.name])


def ddp_problems(methods: list[Mitigation]) -> list[str]:
    """The methods that cannot run under DDP as they are (``Mitigation.rank_local_statistics``): the
    ranks would reset different units and the replicas drift apart (a 2-rank test measured CBP 4e-4
    away from one process)."""
    return [f"mitigations.{m.name} does not support dist.strategy = 'ddp': {why}"
            for m in methods if (why := m.rank_local_statistics()) is not None]


def describe_run(methods: list[Mitigation], loop: LoopView) -> dict[str, Any]:
    """run.json's ``mitigations``: per method its settings, its run-config overrides and its extra
    FLOPs per optimizer step (``Mitigation.extra_flops_per_step``, for matched-compute comparisons)."""
    spt = loop.stream.steps_per_task
    return {m.name: {"config": dataclasses.asdict(m.cfg), "config_overrides": m.config_overrides(),
                     "extra_flops_per_step": m.extra_flops_per_step(loop.gpt_config, loop.tokens_per_step, spt)}
            for m in methods}
