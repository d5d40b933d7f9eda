"""Hook points of the training loop (OLMo-core style callbacks).

The loop in ``train.py`` reads top to bottom and fires these hooks at fixed points; evaluation,
probes, diagnostics, mitigations, logging and progress attach here instead of as ``if cfg.x:``
branches. A callback's ``state_dict`` is saved in every checkpoint and restored on resume, so
resume is exact for callbacks too.

Order of hooks in one run::

    on_fit_start
    for each task:  on_task_start
                    for each step:  [forward/backward]  on_after_backward  [clip, optimizer step]  on_step_end
                    on_task_end          (evaluation, probes, diagnostics)
                    on_cycle_end         (last task of a cycle)
                    [checkpoint]  on_checkpoint
    on_fit_end

``on_log`` fires for every metrics row the loop writes; ``on_evaluate`` after each evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.data.stream import Task
    from plasticlm.train import Trainer


class Callback:
    """Base class: override the hooks you need. ``name`` keys the callback's checkpointed state."""

    name: str = "callback"

    def on_fit_start(self, loop: Trainer) -> None: ...
    def on_task_start(self, loop: Trainer, task: Task) -> None: ...
    def on_after_backward(self, loop: Trainer) -> None: ...
    def on_step_end(self, loop: Trainer, loss: float) -> None: ...
    def on_task_end(self, loop: Trainer, task: Task) -> None: ...
    def on_cycle_end(self, loop: Trainer, task: Task) -> None: ...
    def on_evaluate(self, loop: Trainer, results: dict[str, float]) -> None: ...
    def on_log(self, loop: Trainer, row: dict[str, Any]) -> None: ...
    def on_checkpoint(self, loop: Trainer, path: Path) -> None: ...
    def on_fit_end(self, loop: Trainer) -> None: ...

    def wants_checkpoint(self, task: Task) -> bool:
        """True to force a checkpoint after this task (e.g. a probe point for post-hoc probing)."""
        return False

    def pinned_checkpoints(self) -> set[str]:
        """Checkpoint names that pruning must keep."""
        return set()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Callbacks:
    """An ordered list of callbacks with unique names."""

    def __init__(self, callbacks: list[Callback]):
        names = [c.name for c in callbacks]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"callback names must be unique, repeated: {sorted(dupes)}")
        self.items = list(callbacks)

    def fire(self, hook: str, *args: Any) -> None:
        for cb in self.items:
            getattr(cb, hook)(*args)

    def wants_checkpoint(self, task: Task) -> bool:
        return any(cb.wants_checkpoint(task) for cb in self.items)

    def pinned_checkpoints(self) -> set[str]:
        return set().union(*(cb.pinned_checkpoints() for cb in self.items)) if self.items else set()

    def state_dict(self) -> dict[str, Any]:
        return {cb.name: cb.state_dict() for cb in self.items}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for cb in self.items:
            if cb.name in state:
                cb.load_state_dict(state[cb.name])

    def __iter__(self):
        return iter(self.items)
