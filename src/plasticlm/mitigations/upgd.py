"""UPGD: utility-based perturbed gradient descent (Elsayed & Mahmood 2024, arXiv 2404.00781),
as a rule around the run's AdamW step rather than an optimizer of its own.

Per weight, with g the (clipped) gradient before the step:

    u <- beta u + (1 - beta) (-g * theta),  u_hat = u / (1 - beta^t),  s = sigmoid(u_hat / max u_hat)

(max over every parameter of the model). The paper's update is
theta <- theta (1 - lr wd) - lr (g + xi)(1 - s), xi ~ N(0, sigma^2). Here the gradient direction is
AdamW's (the authors' adaptive variant gates the Adam direction the same way), so the step becomes

    theta <- theta_before (1 - lr wd) + (1 - s) * (delta_adam - lr xi)

with delta_adam = what AdamW added beyond its decoupled decay. Why a rule and not an optimizer:
the loop keeps one AdamW (its state resets at task boundaries, its checkpoint, its LR schedule),
every other mitigation resets that optimizer's state, and the comparison with the baseline then
differs only by the gate and the noise. ``gate_gradient = false`` gates the noise only (the paper's
"non-protecting" variant). When max u_hat <= 0 no weight is useful and u_hat is divided by |max|
(or 1 when all are 0), which keeps s in (0, 1) and unprotected weights near s = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from plasticlm.config import opt
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range, clone_tensors, placed
from plasticlm.model import total_params


@dataclass(frozen=True)
class UPGDConfig(MitigationConfig):
    """Utility-gated AdamW updates with utility-gated noise."""

    beta: float = opt(0.999, "Decay of the running utility (Elsayed & Mahmood: 0.999).")
    sigma: float = opt(1e-3, "Std of the perturbation xi, in gradient units (scaled by the LR) (1e-3).")
    gate_gradient: bool = opt(True, "Gate the AdamW direction by (1 - s) as well as the noise (the paper's UPGD); "
                                    "false gates only the noise.")

    SUMMARY = "UPGD: gate each weight's AdamW update and noise by (1 - its scaled utility)"
    CITATION = "Elsayed & Mahmood 2024, arXiv 2404.00781"
    NOOP = {"sigma": 0.0, "gate_gradient": False}
    NOOP_NOTE = "no gate and no noise: the rule is skipped and AdamW steps alone"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "beta", self.beta, 0.0, 1.0, hi_open=True)
        check_range(p, "sigma", self.sigma, 0.0)
        return p


class UPGD(Mitigation):
    name = "upgd"

    def __init__(self, cfg: UPGDConfig, seed: int = 0):
        super().__init__(cfg, seed)
        self.util: dict[str, torch.Tensor] | None = None
        self.t = 0
        self._before: dict[str, torch.Tensor] = {}

    def _params(self, model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def pre_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.cfg.is_noop:
            return
        if self.util is None:
            self.util = {n: torch.zeros_like(p) for n, p in self._params(model)}
        self.util = placed(self.util, dict(self._params(model)))
        self.t += 1
        self._before = {}
        for n, p in self._params(model):
            if p.grad is None:
                continue
            self.util[n].mul_(self.cfg.beta).add_(-p.grad * p, alpha=1.0 - self.cfg.beta)
            self._before[n] = p.detach().clone()

    def scaled_utility(self) -> dict[str, torch.Tensor]:
        """s = sigmoid(u_hat / max u_hat) per parameter (the module docstring's rule for max <= 0)."""
        corr = 1.0 - self.cfg.beta ** self.t
        u_hat = {n: u / corr for n, u in self.util.items()}
        top = max(float(u.max()) for u in u_hat.values())
        scale = top if top > 0 else (abs(top) if top < 0 else 1.0)
        return {n: torch.sigmoid(u / scale) for n, u in u_hat.items()}

    @torch.no_grad()
    def post_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.cfg.is_noop or not self._before:
            return
        s = self.scaled_utility()
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        for n, p in self._params(model):
            if n not in self._before:
                continue
            group = group_of[id(p)]
            lr, wd = group["lr"], group.get("weight_decay", 0.0)
            gate = 1.0 - s[n]
            noise = self.randn(p.shape, p).mul_(lr * self.cfg.sigma)
            if self.cfg.gate_gradient:
                decayed = self._before[n] * (1.0 - lr * wd)
                p.copy_(decayed + gate * ((p - decayed) - noise))
            else:
                p.sub_(gate * noise)
        self._before = {}

    def extra_flops_per_step(self, config, tokens_per_step: int, steps_per_task: int) -> float:
        # utility update (3), snapshot, max and sigmoid (~6), noise draw and scale (2), gate (~5)
        return 0.0 if self.cfg.is_noop else 16.0 * total_params(config)

    def _state(self) -> dict:
        return {"util": clone_tensors(self.util), "t": self.t}

    def _load_state(self, state: dict) -> None:
        self.util, self.t = clone_tensors(state["util"]), int(state["t"])
