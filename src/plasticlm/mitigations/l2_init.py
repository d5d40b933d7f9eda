"""L2 Init: regularise toward the initial weights (Kumar et al. 2023, arXiv 2308.11958).

loss + (lambda / 2) * sum ||theta - theta_0||^2 over every parameter except the LayerNorm gains and
biases (``ln_1``, ``ln_2``, ``ln_f``), so the gradient of the term is lambda * (theta - theta_0).
theta_0 is the model's weights when ``on_fit_start`` first sees it (the initialisation), kept in
the state dict so that a resumed run regularises toward the same point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from plasticlm.config import opt
from plasticlm.errors import PlasticError
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range, clone_tensors, placed
from plasticlm.model import total_params

LAYERNORM_NAMES = ("ln_1", "ln_2", "ln_f")


def regularised_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every parameter L2 Init pulls toward its initial value: all but LayerNorm."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad
            and not any(part in LAYERNORM_NAMES for part in n.split("."))]


@dataclass(frozen=True)
class L2InitConfig(MitigationConfig):
    """L2 regularisation toward the initial weights."""

    strength: float = opt(1e-3, "lambda of the term (lambda / 2) ||theta - theta_0||^2 (Kumar et al.: 1e-2..1e-5); "
                                "0 = off (no-op).")

    SUMMARY = "L2 Init: add (lambda/2) ||theta - theta_0||^2 to the loss, LayerNorm excluded"
    CITATION = "Kumar et al. 2023, arXiv 2308.11958"
    NOOP = {"strength": 0.0}
    NOOP_NOTE = "loss_term returns None; theta_0 is still recorded"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "strength", self.strength, 0.0)
        return p


class L2Init(Mitigation):
    name = "l2_init"

    def __init__(self, cfg: L2InitConfig, seed: int = 0):
        super().__init__(cfg, seed)
        self.theta0: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        named = regularised_parameters(model)
        if self.theta0 is None:
            self.theta0 = {n: p.detach().clone() for n, p in named}
            return
        if set(self.theta0) != {n for n, _ in named}:
            raise PlasticError("l2_init: the saved initial weights do not match the model's parameters; the "
                               "checkpoint belongs to another model")

    def loss_term(self, model: nn.Module) -> torch.Tensor | None:
        if self.cfg.strength == 0.0:
            return None
        if self.theta0 is None:
            raise PlasticError("l2_init: on_fit_start was not called, so there are no initial weights")
        named = regularised_parameters(model)
        self.theta0 = placed(self.theta0, dict(named))
        total = sum(((p - self.theta0[n]) ** 2).sum() for n, p in named)
        return 0.5 * self.cfg.strength * total

    def extra_flops_per_step(self, config, tokens_per_step: int, steps_per_task: int) -> float:
        # forward: subtract, square, sum; backward: subtract, scale, accumulate
        return 0.0 if self.cfg.strength == 0.0 else 6.0 * total_params(config)

    def _state(self) -> dict:
        return {"theta0": clone_tensors(self.theta0)}

    def _load_state(self, state: dict) -> None:
        self.theta0 = clone_tensors(state["theta0"])
