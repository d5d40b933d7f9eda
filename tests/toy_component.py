"""A toy loop component registered from outside plasticlm (the config names it
``tests.toy_component:toy``): it records every hook it sees, keeps state, logs rows and draws from
its own random stream, so tests can check the component contract (tests/test_components.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from plasticlm.components import Component, LoopView, register


@dataclass
class ToyOptions:
    draws_per_task: int = field(default=1, metadata={"help": "random numbers drawn at each task start"})
    label: str = field(default="toy", metadata={"help": "written into every row"})


@register("toy", options=ToyOptions)
class Toy(Component):
    """Records hooks; one toy.jsonl row per task with what it saw; state: steps and a batch checksum."""

    def __init__(self, loop: LoopView, options: ToyOptions):
        self.options = options
        self.events: list[tuple[str, int]] = []  # (hook, step), in memory only
        self.steps_seen = 0
        self.batch_sum = 0
        self.log = loop.open_log("toy.jsonl")
        self.draws: list[float] = []

    def _ev(self, loop: LoopView, hook: str) -> None:
        self.events.append((hook, loop.step))

    def on_fit_start(self, loop):
        self._ev(loop, "on_fit_start")

    def on_task_start(self, loop, task):
        self._ev(loop, "on_task_start")
        g = loop.generator("cpu")
        self.draws = torch.rand(self.options.draws_per_task, generator=g).tolist()

    def on_step_start(self, loop, batch):
        self._ev(loop, "on_step_start")
        x, y = batch
        assert isinstance(x, np.ndarray) and x.shape == y.shape
        self.batch_sum = (self.batch_sum + int(x.sum())) % 1_000_003

    def on_after_backward(self, loop):
        self._ev(loop, "on_after_backward")
        assert any(p.grad is not None for p in loop.model.parameters())

    def pre_optim_step(self, loop):
        self._ev(loop, "pre_optim_step")
        assert any(p.grad is not None for p in loop.model.parameters())  # clipped, not yet applied

    def on_step_end(self, loop, loss):
        self._ev(loop, "on_step_end")
        self.steps_seen += 1

    def on_task_end(self, loop, task):
        self._ev(loop, "on_task_end")
        self.log.append({"label": self.options.label, "task": task.index, "step": loop.step,
                         "steps_seen": self.steps_seen, "batch_sum": self.batch_sum, "draws": self.draws})

    def on_cycle_end(self, loop, task):
        self._ev(loop, "on_cycle_end")

    def on_evaluate(self, loop, results):
        self._ev(loop, "on_evaluate")

    def on_log(self, loop, row):
        self._ev(loop, "on_log")

    def on_checkpoint(self, loop, path):
        self._ev(loop, "on_checkpoint")

    def on_fit_end(self, loop):
        self._ev(loop, "on_fit_end")

    def state_dict(self):
        return {"steps_seen": self.steps_seen, "batch_sum": self.batch_sum}

    def load_state_dict(self, state):
        self.steps_seen, self.batch_sum = state["steps_seen"], state["batch_sum"]
