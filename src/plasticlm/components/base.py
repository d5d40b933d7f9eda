"""What a component is and what it sees of the training loop.

A component (evaluation, probes, mitigations, progress, trackers) attaches to
the loop in ``train.py`` through hooks that fire at fixed points, in the order of
``train.components`` (then components passed in code)::

    on_fit_start
    for each task:  on_task_start(task)
                    for each step:  on_step_start(batch)  [forward/backward]  on_after_backward
                                    [clip gradients]  pre_optim_step  [optimizer step]  on_step_end(loss)
                    on_task_end(task)        (evaluation, probes)
                    on_cycle_end(task)       (last task of a cycle)
                    [checkpoint]  on_checkpoint(path)
    on_fit_end

``on_log(row)`` fires for every metrics row written, ``on_evaluate(results)`` after each evaluation.

Every hook receives a ``LoopView``: the component's narrow window on the loop. Through it a component
reads the loop's state (config, the raw model, optimizer, stream, step, tokens, task; under torchrun
also rank, world size and strategy), writes metrics rows
(``log``), reports an evaluation (``report_evaluation``), opens a JSONL log of its own
(``open_log``), and draws randomness from its own stream (``generator``), never from the global
torch RNG, so a component that draws (Shrink & Perturb, CBP) leaves the training trajectory of the
other components and of the data order untouched. A component's ``state_dict`` (tensors, numbers,
strings, lists and dicts: it is saved with ``torch.save`` in the checkpoint's components.pt and read
back with ``weights_only``), the row counts of its logs and the position of its random stream are
saved in every checkpoint and restored on resume, so resume is exact for components too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from plasticlm import dist
from plasticlm.runlog import JsonlLog

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.data.stream import LanguageStream, Task
    from plasticlm.train import Trainer

Batch = tuple[np.ndarray, np.ndarray]
"""A global batch as the stream serves it: inputs and targets, int64 arrays of shape (B, T)."""

HOOKS = ("on_fit_start", "on_task_start", "on_step_start", "on_after_backward", "pre_optim_step", "on_step_end",
         "on_task_end", "on_cycle_end", "on_evaluate", "on_log", "on_checkpoint", "on_fit_end")
"""Every hook, in the order of their first firing in a run."""


class Component:
    """Base class: override the hooks you need. ``name`` keys the component's checkpointed state
    (the registry sets it to the registered name)."""

    name: str = "component"

    def on_fit_start(self, loop: LoopView) -> None: ...
    def on_task_start(self, loop: LoopView, task: Task) -> None: ...
    def on_step_start(self, loop: LoopView, batch: Batch) -> None: ...
    def on_after_backward(self, loop: LoopView) -> None: ...
    def pre_optim_step(self, loop: LoopView) -> None: ...
    def on_step_end(self, loop: LoopView, loss: float) -> None: ...
    def on_task_end(self, loop: LoopView, task: Task) -> None: ...
    def on_cycle_end(self, loop: LoopView, task: Task) -> None: ...
    def on_evaluate(self, loop: LoopView, results: dict[str, float]) -> None: ...
    def on_log(self, loop: LoopView, row: dict[str, Any]) -> None: ...
    def on_checkpoint(self, loop: LoopView, path: Path | None) -> None: ...
    def on_fit_end(self, loop: LoopView) -> None: ...

    def wants_checkpoint(self, task: Task) -> bool:
        """True to force a checkpoint after this task (e.g. a probe point for post-hoc probing)."""
        return False

    def pinned_checkpoints(self) -> set[str]:
        """Checkpoint names that pruning must keep."""
        return set()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RandomStream:
    """A component's own randomness: the k-th ``generator()`` is seeded from (run seed, component
    name, k), so the stream's whole state is the counter k, checkpointed with the component."""

    def __init__(self, seed: int, name: str):
        self.seed, self.name, self.draws = seed, name, 0

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        digest = hashlib.sha256(f"{self.seed}/{self.name}/{self.draws}".encode()).digest()
        self.draws += 1
        return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class LoopView:
    """One component's window on the loop: read the state, write through the methods."""

    def __init__(self, trainer: Trainer, name: str):
        self._t = trainer
        self.name = name
        self.random = RandomStream(trainer.cfg.train.seed, name)

    # state (read)
    @property
    def cfg(self):
        return self._t.cfg

    @property
    def run_dir(self) -> Path:
        return self._t.run_dir

    @property
    def data(self) -> Any:
        return self._t.data

    @property
    def model(self) -> torch.nn.Module:
        return self._t.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._t.optimizer

    @property
    def device(self) -> torch.device:
        return self._t.device

    @property
    def gpt_config(self):
        return self._t.gpt_config

    @property
    def stream(self) -> LanguageStream:
        return self._t.stream

    @property
    def step(self) -> int:
        """Optimizer steps taken."""
        return self._t.step

    @property
    def tokens(self) -> int:
        """Training tokens seen."""
        return self._t.tokens

    @property
    def task(self) -> Task | None:
        """The task being trained (or just finished); None before training."""
        return self._t.task

    @property
    def lr(self) -> float:
        return self._t.lr

    @property
    def grad_norm(self) -> float:
        """Pre-clip global gradient norm of the last step (NaN before the first)."""
        return self._t.grad_norm

    @property
    def peak_lr(self) -> float:
        return self._t.peak_lr

    @property
    def tokens_per_step(self) -> int:
        return self._t.tokens_per_step

    @property
    def quiet(self) -> bool:
        """True when the run was started without progress output (sweep workers, tests)."""
        return self._t.quiet

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0): JSONL logs, trackers and progress bars are
        rank 0's; every rank fires every hook (and takes part in evaluation and probes)."""
        return self._t.is_main

    @property
    def rank(self) -> int:
        """This process's rank under torchrun (0 in one process)."""
        return dist.rank()

    @property
    def world_size(self) -> int:
        """Processes training this run (1 without torchrun)."""
        return dist.world_size()

    @property
    def strategy(self) -> str:
        """How the run is parallelised: none (one process), ddp or fsdp (``model`` holds shards)."""
        return self._t.strategy

    def full_model(self) -> torch.nn.Module:
        """``model`` with full weights on this device: itself, or under FSDP a gathered copy
        (collective: every rank must call it at the same point). Probes copy this."""
        return self._t.full_model()

    # actions (write)
    def log(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write one metrics.jsonl row tagged with the loop position; fires ``on_log``."""
        return self._t.log(metrics)

    def report_evaluation(self, results: dict[str, float]) -> None:
        """Log an evaluation's results and fire ``on_evaluate``."""
        self._t.log(results)
        self._t.components.fire("on_evaluate", results)

    def open_log(self, filename: str, rollback: bool = True) -> JsonlLog:
        """A JSONL log of this component in the run directory (written on the main process only).
        With ``rollback`` its row count is checkpointed and a resume truncates it to that count."""
        log = JsonlLog(self.run_dir / filename, enabled=self.is_main)
        if rollback:
            self._t.logs[Path(filename).stem] = log
        return log

    def generator(self, device: torch.device | str | None = None) -> torch.Generator:
        """A fresh generator from this component's own random stream (see ``RandomStream``)."""
        return self.random.generator(device if device is not None else self.device)

    def update_run_info(self, **fields: Any) -> None:
        """Merge fields into run.json (main process only)."""
        if self.is_main:
            self._t.update_run_json(**fields)


class Components:
    """The run's components in firing order, each with its view; names are unique."""

    def __init__(self, items: list[tuple[Component, LoopView]]):
        names = [c.name for c, _ in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"component names must be unique, repeated: {dupes}")
        self.items = list(items)

    def fire(self, hook: str, *args: Any) -> None:
        for c, view in self.items:
            getattr(c, hook)(view, *args)

    def wants_checkpoint(self, task: Task) -> bool:
        return any(c.wants_checkpoint(task) for c, _ in self.items)

    def pinned_checkpoints(self) -> set[str]:
        return set().union(*(c.pinned_checkpoints() for c, _ in self.items))

    def state_dict(self) -> dict[str, Any]:
        return {c.name: c.state_dict() for c, _ in self.items}

    def random_state(self) -> dict[str, int]:
        return {c.name: v.random.draws for c, v in self.items}

    def load_state_dict(self, state: dict[str, Any], random_state: dict[str, int] | None = None) -> None:
        for c, view in self.items:
            if c.name in state:
                c.load_state_dict(state[c.name])
            view.random.draws = int((random_state or {}).get(c.name, 0))

    def __iter__(self):
        return (c for c, _ in self.items)
