"""Selective weight reinitialisation (Hernandez-Garcia, Dohare, Luo & Sutton 2025, arXiv 2508.00212):
re-initialise individual low-utility weights instead of whole units.

Per weight of every block linear (attn.qkv, attn.proj, mlp.fc, mlp.proj), each step:

- age += 1; with ``utility = "gradient"`` u <- eta u + (1 - eta) |theta * g| (the first-order
  estimate of the loss change if the weight were removed; g the clipped gradient before the step),
  ranked bias-corrected u / (1 - eta^age); with ``utility = "magnitude"`` the score is |theta|;
- per tensor, weights with age > maturity are eligible and the budget grows by rho * n_eligible;
  its whole part picks the eligible weights with the lowest score (the selection rule of CBP,
  ``units.select_units``, so a budget cannot pile up while nothing is eligible);
- each picked weight is re-drawn from its init distribution (``reinit = "resample"``) or set to
  its mean 0 (``"zero"``), its Adam moments (and per-element step, where there is one) zeroed, its
  utility and age 0.

The paper found resampling with the gradient utility the variant that kept plasticity; it is the
default here. Where the paper's details differ from this summary, this module is what plasticlm runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from plasticlm.config import opt
from plasticlm.errors import PlasticError
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range, clone_tensors, placed
from plasticlm.mitigations.units import (
    bias_corrected,
    block_linear_weights,
    init_std,
    reset_optimizer_entries,
    select_units,
)
from plasticlm.model import block_params


@dataclass(frozen=True)
class SelectiveReinitConfig(MitigationConfig):
    """Selective weight reinitialisation."""

    rate: float = opt(1e-5, "rho: fraction of the eligible weights of each tensor re-initialised per step; "
                            "0 = never (no-op).")
    decay: float = opt(0.99, "eta: decay of the running gradient utility.")
    maturity: int = opt(1000, "Steps a weight must have lived (since init or its last reset) to be eligible.")
    utility: Literal["gradient", "magnitude"] = opt("gradient", "Score: running |theta * g|, or |theta|.")
    reinit: Literal["resample", "zero"] = opt("resample", "New value: a draw from the init distribution, or 0.")

    SUMMARY = "Selective weight reinitialisation: re-draw the lowest-utility mature weights of each matrix"
    CITATION = "Hernandez-Garcia et al. 2025, arXiv 2508.00212"
    NOOP = {"rate": 0.0}
    NOOP_NOTE = "utilities and ages are still tracked; no weight is re-initialised"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "rate", self.rate, 0.0, 1.0)
        check_range(p, "decay", self.decay, 0.0, 1.0, hi_open=True)
        check_range(p, "maturity", self.maturity, 0)
        return p


class SelectiveReinit(Mitigation):
    name = "selective_reinit"

    def __init__(self, cfg: SelectiveReinitConfig, seed: int = 0):
        super().__init__(cfg, seed)
        self.util: dict[str, torch.Tensor] | None = None
        self.age: dict[str, torch.Tensor] | None = None
        self.budget: dict[str, float] | None = None
        self.reinit_total = 0
        self.last_reinit: dict[str, torch.Tensor] = {}

    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        named = block_linear_weights(model)
        if self.age is None:
            self.util = {n: torch.zeros_like(w) for n, w in named}
            self.age = {n: torch.zeros(w.shape, dtype=torch.int32, device=w.device) for n, w in named}
            self.budget = {n: 0.0 for n, _ in named}
            return
        if {n: tuple(w.shape) for n, w in named} != {n: tuple(a.shape) for n, a in self.age.items()}:
            raise PlasticError("selective_reinit: the saved utilities do not match the model's weights; the "
                               "checkpoint belongs to another model")

    def _place(self, model: nn.Module) -> None:
        weights = dict(block_linear_weights(model))
        self.util, self.age = placed(self.util, weights), placed(self.age, weights)

    @torch.no_grad()
    def pre_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._place(model)
        if self.cfg.utility != "gradient":
            return
        for n, w in block_linear_weights(model):
            if w.grad is not None:
                self.util[n].mul_(self.cfg.decay).add_((w * w.grad).abs_(), alpha=1.0 - self.cfg.decay)

    @torch.no_grad()
    def post_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        cfg = self.cfg
        self.last_reinit = {}
        self._place(model)
        for n, w in block_linear_weights(model):
            age = self.age[n]
            age += 1
            if cfg.rate == 0.0:
                continue
            scores = bias_corrected(self.util[n], age, cfg.decay) if cfg.utility == "gradient" else w.abs()
            flat, self.budget[n] = select_units(scores.flatten(), age.flatten(), cfg.maturity, self.budget[n], cfg.rate)
            if flat.numel() == 0:
                continue
            mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
            mask[flat.to(w.device)] = True
            mask = mask.view_as(w)
            if cfg.reinit == "resample":
                fresh = torch.randn(flat.numel(), generator=self.generator) * init_std(model, n)
                w.view(-1)[flat.to(w.device)] = fresh.to(w.device, w.dtype)
            else:
                w[mask] = 0
            reset_optimizer_entries(optimizer, w, mask)
            self.util[n][mask] = 0
            age[mask] = 0
            self.reinit_total += flat.numel()
            self.last_reinit[n] = flat

    def extra_flops_per_step(self, config, tokens_per_step: int, steps_per_task: int) -> float:
        # per weight: age, utility update (3), bias correction (3), selection (~2)
        return 9.0 * block_params(config)

    def _state(self) -> dict:
        return {"util": clone_tensors(self.util), "age": clone_tensors(self.age),
                "budget": None if self.budget is None else dict(self.budget), "reinit_total": self.reinit_total}

    def _load_state(self, state: dict) -> None:
        self.util, self.age = clone_tensors(state["util"]), clone_tensors(state["age"])
        self.budget = None if state["budget"] is None else {k: float(v) for k, v in state["budget"].items()}
        self.reinit_total = int(state["reinit_total"])
