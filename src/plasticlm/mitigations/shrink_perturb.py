"""Shrink & Perturb (Ash & Adams 2020, arXiv 1910.08475).

theta <- lambda * theta + sigma * eps for every parameter (the tied embedding once), either after
every optimizer step or at the start of every task that switches the data. eps ~ N(0, 1)
(``noise = "gaussian"``), or eps = a fresh draw from the parameter's init distribution
(``noise = "init"``: N(0, std) for weights, the constant for biases and LayerNorm, so that
lambda = 1 - sigma moves each parameter a fraction sigma of the way to a new initialisation).
Draws come from the method's own generator, one tensor per parameter in ``named_parameters``
order. The optimizer state is left as it is (nothing is reset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from plasticlm.config import opt
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range, task_switches
from plasticlm.mitigations.units import gpt_of
from plasticlm.model import param_init, total_params


@dataclass(frozen=True)
class ShrinkPerturbConfig(MitigationConfig):
    """Shrink & Perturb."""

    shrink: float = opt(0.9999, "lambda: multiplier of every parameter (Ash & Adams; 0.999..0.9999 per step).")
    sigma: float = opt(1e-4, "Scale of the perturbation (1e-5..1e-3).")
    at: Literal["step", "task"] = opt("step", "After every optimizer step, or at the start of every task switch.")
    noise: Literal["gaussian", "init"] = opt("gaussian", "eps ~ N(0, 1), or eps = a fresh draw of the parameter's "
                                                         "init distribution.")

    SUMMARY = "Shrink & Perturb: theta <- lambda theta + sigma eps, every step or at task switches"
    CITATION = "Ash & Adams 2020, arXiv 1910.08475"
    NOOP = {"shrink": 1.0, "sigma": 0.0}
    NOOP_NOTE = "the rule is skipped, so no draw is made"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "shrink", self.shrink, 0.0, 1.0)
        check_range(p, "sigma", self.sigma, 0.0)
        return p


class ShrinkPerturb(Mitigation):
    name = "shrink_perturb"

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """One shrink-and-perturb of every parameter."""
        if self.cfg.is_noop:
            return
        config = gpt_of(model).config
        for name, p in model.named_parameters():
            eps = self.randn(p.shape, p)
            if self.cfg.noise == "init":
                kind, value = param_init(config, name)
                eps = eps * value if kind == "normal" else torch.full_like(p, value)
            p.mul_(self.cfg.shrink).add_(eps, alpha=self.cfg.sigma)

    def post_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.cfg.at == "step":
            self.apply(model)

    def on_task_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, task) -> None:
        if self.cfg.at == "task" and task_switches(task):
            self.apply(model)

    def extra_flops_per_step(self, config, tokens_per_step: int, steps_per_task: int) -> float:
        if self.cfg.is_noop:
            return 0.0
        per_apply = 3.0 * total_params(config)  # draw, scale, multiply-add
        return per_apply if self.cfg.at == "step" else per_apply / max(1, steps_per_task)
