"""The interface every mitigation implements, and what configs and generators share.

A mitigation is built from a typed, frozen config (``MitigationConfig`` subclass) and a seed, and
the training loop calls its hooks at fixed points of one optimizer step::

    on_fit_start(model, optimizer)            once, before the first step (also after a restore)
    on_task_start(model, optimizer, task)     before the first step of each task
      on_step_start(batch)                    the step's (inputs, targets), before forward
      [forward + backward of loss + loss_term(model)]
      [gradient clipping]
      pre_optim_step(model, optimizer)        gradients final, weights not yet updated
      [optimizer.step()]
      post_optim_step(model, optimizer, step) weights updated; step = optimizer steps done (1-based)
    on_task_end(model, optimizer, task)       after the last step of each task
    close()                                   at the end (removes forward hooks)

``model`` is the raw (unwrapped) plasticlm GPT; ``optimizer`` the AdamW whose state a reset must
touch; ``task`` a ``plasticlm.data.stream.Task`` (``index``, ``switch``, ...). ``loss_term`` is
added once per optimizer step (not once per micro-batch) and its gradient is clipped with the rest.

State: ``state_dict()`` holds everything needed to continue exactly (utilities, ages, counters,
initial weights, the mitigation's own ``torch.Generator``). It holds tensors, so the loop saves it
with ``torch.save``, not in meta.json. ``load_state_dict`` may come before or after
``on_fit_start``; the loop's order today is build -> restore -> on_fit_start.

Randomness: every draw uses the mitigation's own CPU generator, seeded from the run seed and the
method's name, never torch's global RNG, so that enabling a mitigation never shifts the data order
or another component's draws, and a no-op setting leaves training bit-identical.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from plasticlm.config import describe
from plasticlm.errors import PlasticError

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.data.stream import Task
    from plasticlm.model import GPTConfig


@dataclasses.dataclass(frozen=True)
class MitigationConfig:
    """Base of every method's config. Subclasses are frozen dataclasses whose fields carry a
    ``help`` text (``plasticlm.config.opt``) and set the class attributes below."""

    SUMMARY: ClassVar[str] = ""
    CITATION: ClassVar[str] = ""
    NOOP: ClassVar[dict[str, Any]] = {}
    """Field values that make the method an exact no-op (training bit-identical to the baseline)."""
    NOOP_NOTE: ClassVar[str] = ""

    def validate(self) -> list[str]:
        """Problems with the values (empty when valid); messages name the key and the fix."""
        return []

    @property
    def is_noop(self) -> bool:
        """True when every field named in NOOP has its no-op value."""
        return all(getattr(self, k) == v for k, v in self.NOOP.items())


def check_range(problems: list[str], name: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False, hint: str = "") -> None:
    """Append a message to ``problems`` when ``value`` is outside [lo, hi] (open ends on request)."""
    bad = (lo is not None and (value < lo or (lo_open and value == lo))) or \
          (hi is not None and (value > hi or (hi_open and value == hi)))
    if bad or value != value:  # NaN is never in range
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        problems.append(f"{name} = {value}: must be in {span}" + (f" ({hint})" if hint else ""))


def config_rows(cls: type[MitigationConfig]) -> list[dict[str, str]]:
    """key, type, default (the value itself) and help of every field of a method's config."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return [{"key": key, "type": tp, "default": defaults[key], "help": help_}
            for key, tp, _, help_ in describe(cls)]


def method_seed(seed: int, name: str) -> int:
    """A seed for one method's generator: the run seed mixed with a stable hash of the name, so two
    methods in one run draw independent streams and neither touches torch's global RNG."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


class Mitigation:
    """Base class: every hook is a no-op; a method overrides the hooks it needs.

    Subclasses set ``name`` and keep their configuration in ``self.cfg``. ``self.generator`` is the
    method's own torch.Generator (CPU), part of ``state_dict``.
    """

    name: ClassVar[str] = "mitigation"

    def __init__(self, cfg: MitigationConfig, seed: int = 0):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(method_seed(seed, self.name))

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_task_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, task: Task) -> None: ...
    def on_step_start(self, batch) -> None: ...

    def loss_term(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the training loss once per optimizer step, or None."""
        return None

    def pre_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def post_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None: ...
    def on_task_end(self, model: nn.Module, optimizer: torch.optim.Optimizer, task: Task) -> None: ...
    def close(self) -> None: ...

    def config_overrides(self) -> dict[str, Any]:
        """Run-config values (dotted keys, e.g. ``stream.replay_fraction``) the method needs set
        before the stream and schedule are built; most methods need none."""
        return {}

    def rank_local_statistics(self) -> str | None:
        """Under DDP: what the method reads from this rank's rows of the batch, with the fix, or None
        when it acts alike on every rank (it reads weights, all-reduced gradients, a held-out batch or
        its own generator). Such a method would reset different units on different ranks."""
        return None

    # ------------------------------------------------------------------ accounting
    def extra_flops_per_step(self, config: GPTConfig, tokens_per_step: int, steps_per_task: int) -> float:
        """Extra FLOPs per optimizer step on a model of ``config``, work done once per task or every
        F steps amortised over the steps; element-wise operations count one FLOP per element and
        operation, random draws one per number. For matched-compute comparisons."""
        return 0.0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" not in state:
            raise PlasticError(f"{self.name}: the saved state has no generator; it was not written by "
                               "Mitigation.state_dict (a checkpoint of another plasticlm version?)")
        self.generator.set_state(state["generator"])
        self._load_state(state)

    def _state(self) -> dict[str, Any]:
        """The method's own state besides its generator (tensors are cloned by the caller's save)."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None: ...

    # ------------------------------------------------------------------ helpers
    def randn(self, shape, like: torch.Tensor) -> torch.Tensor:
        """Standard normal draws from the method's generator (on CPU, so that the stream is the same
        on every device), in the dtype and on the device of ``like``."""
        return torch.randn(tuple(shape), generator=self.generator).to(like.device, like.dtype)


def clone_tensors(tensors):
    """A copy of a list or dict of tensors (None stays None), so that a state dict does not alias
    the live buffers a later step mutates."""
    if tensors is None:
        return None
    if isinstance(tensors, dict):
        return {k: v.clone() for k, v in tensors.items()}
    return [t.clone() for t in tensors]


def placed(tensors: dict[str, torch.Tensor] | None, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The per-parameter state ``tensors`` on the devices of the parameters ``named`` (a restored
    state is loaded on the CPU; ``.to`` of a tensor already in place is free)."""
    return None if tensors is None else {n: t.to(named[n].device) for n, t in tensors.items()}


def task_switches(task: Task) -> bool:
    """True for a task whose data differs from the previous one (not the first task, and not a
    stationary segment)."""
    return bool(task.switch) and task.index > 0
