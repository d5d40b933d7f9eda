"""Continual Backprop on the MLP hidden units (Dohare et al. 2024, Nature, arXiv 2306.13812).

Per hidden unit i of every block's MLP (the GeLU output, 4d units per block), after each optimizer
step:

- age_i += 1;
- y_i = hbar_i * sum_k |W_proj[k, i]|, hbar_i = mean |h_i| over the step's training tokens (the
  contribution utility);
- u_i <- eta u_i + (1 - eta) y_i, ranked by the bias-corrected u_i / (1 - eta^age_i);
- units with age > maturity are eligible; the layer's budget grows by rho * n_eligible per step
  and its whole part is spent on the eligible units with the lowest bias-corrected utility
  (``reset_units``: incoming weights re-drawn from the init, bias 0, outgoing weights 0, optimizer
  state of those rows/columns zeroed; age and utility 0).

Two failure modes of public implementations are ruled out by construction and tested: ranking by
the raw utility (a unit that matured recently looks useless only because its average started at
0), and a budget that accumulates while no unit is eligible and is then spent at once, wiping a
layer in one burst: here the budget grows only with eligible units and never exceeds their number.
A reset unit has age 0, so it cannot be replaced again before it is ``maturity`` steps old.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from plasticlm.config import opt
from plasticlm.errors import PlasticError
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range, clone_tensors
from plasticlm.mitigations.units import bias_corrected, init_std, mlp_layers, reset_units, select_units


@dataclass(frozen=True)
class CBPConfig(MitigationConfig):
    """Continual Backprop on MLP hidden units."""

    replacement_rate: float = opt(1e-5, "rho: fraction of the eligible units replaced per step "
                                         "(Dohare et al.: 1e-4..1e-6); 0 = never replace (no-op).")
    decay: float = opt(0.99, "eta: decay of the running utility (Dohare et al.: 0.99).")
    maturity: int = opt(1000, "Steps a unit must have lived before it can be replaced (100..10,000).")

    SUMMARY = "Continual Backprop: replace the lowest-utility mature MLP units by fresh ones"
    CITATION = "Dohare et al. 2024, Nature, arXiv 2306.13812"
    NOOP = {"replacement_rate": 0.0}
    NOOP_NOTE = "utilities are still tracked (forward hooks that change nothing); no unit is replaced"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "replacement_rate", self.replacement_rate, 0.0, 1.0)
        check_range(p, "decay", self.decay, 0.0, 1.0, hi_open=True)
        check_range(p, "maturity", self.maturity, 0)
        return p


class CBP(Mitigation):
    name = "cbp"

    def __init__(self, cfg: CBPConfig, seed: int = 0):
        super().__init__(cfg, seed)
        self.util: list[torch.Tensor] | None = None  # per layer, float64 (n_units,)
        self.age: list[torch.Tensor] | None = None  # per layer, int64 (n_units,)
        self.budget: list[float] | None = None
        self.replaced_total = 0
        self._acc: list[torch.Tensor | None] = []  # sum over the step's tokens of |h|, per layer
        self._tokens: list[int] = []
        self._hooks: list = []
        self._mlps: list[nn.Module] = []
        self._std: list[float] = []
        self.last_replaced: list[torch.Tensor] = []

    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.close()
        self._mlps = [m for _, m in mlp_layers(model)]
        self._std = [init_std(model, f"{n}.fc.weight") for n, _ in mlp_layers(model)]
        sizes = [m.fc.weight.shape[0] for m in self._mlps]
        if self.util is None:
            self.util = [torch.zeros(n, dtype=torch.float64) for n in sizes]
            self.age = [torch.zeros(n, dtype=torch.long) for n in sizes]
            self.budget = [0.0] * len(sizes)
        elif [u.numel() for u in self.util] != sizes:
            raise PlasticError(f"cbp: saved state has layers of {[u.numel() for u in self.util]} units, the model "
                               f"{sizes}; the checkpoint belongs to another model size")
        self._acc = [None] * len(sizes)
        self._tokens = [0] * len(sizes)
        for i, mlp in enumerate(self._mlps):
            self._hooks.append(mlp.act.register_forward_hook(self._recorder(i)))

    def _recorder(self, i: int):
        def hook(module, inputs, output):
            # training forwards only: evaluation and probes run without grad or in eval mode
            if not (module.training and torch.is_grad_enabled()):
                return
            h = output.detach().reshape(-1, output.shape[-1])
            s = h.abs().sum(0, dtype=torch.float64)  # stays on the device: no sync per forward
            self._acc[i] = s if self._acc[i] is None else self._acc[i] + s
            self._tokens[i] += h.shape[0]
        return hook

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def on_step_start(self, batch) -> None:
        self._acc = [None] * len(self._acc)
        self._tokens = [0] * len(self._tokens)

    @torch.no_grad()
    def post_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        cfg = self.cfg
        self.last_replaced = []
        for i, mlp in enumerate(self._mlps):
            if self._acc[i] is None:  # no training forward this step: nothing to learn from
                self.last_replaced.append(torch.zeros(0, dtype=torch.long))
                continue
            hbar = self._acc[i].cpu() / self._tokens[i]
            out_mag = mlp.proj.weight.detach().abs().sum(0, dtype=torch.float64).cpu()
            self.age[i] += 1
            self.util[i].mul_(cfg.decay).add_(hbar * out_mag, alpha=1.0 - cfg.decay)
            scores = bias_corrected(self.util[i], self.age[i], cfg.decay)
            idx, self.budget[i] = select_units(scores, self.age[i], cfg.maturity, self.budget[i], cfg.replacement_rate)
            if idx.numel():
                reset_units(mlp.fc, mlp.proj, idx, optimizer, self.generator, self._std[i])
                self.util[i][idx] = 0.0
                self.age[i][idx] = 0
                self.replaced_total += idx.numel()
            self.last_replaced.append(idx)
        self._acc = [None] * len(self._acc)
        self._tokens = [0] * len(self._tokens)

    def rank_local_statistics(self) -> str | None:
        return "CBP's utilities come from this rank's rows of the batch; run it on one process"

    def extra_flops_per_step(self, config, tokens_per_step: int, steps_per_task: int) -> float:
        # |h| and its sum over tokens, |W_proj| and its column sums, the running-utility update
        n = 4 * config.d_model
        return float(config.n_layer * (2 * tokens_per_step * n + 2 * n * config.d_model + 8 * n))

    def _state(self) -> dict:
        budget = None if self.budget is None else list(self.budget)
        return {"util": clone_tensors(self.util), "age": clone_tensors(self.age), "budget": budget,
                "replaced_total": self.replaced_total}

    def _load_state(self, state: dict) -> None:
        self.util, self.age = clone_tensors(state["util"]), clone_tensors(state["age"])
        self.budget = None if state["budget"] is None else [float(b) for b in state["budget"]]
        self.replaced_total = int(state["replaced_total"])
