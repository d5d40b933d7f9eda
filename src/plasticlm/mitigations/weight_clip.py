"""Weight clipping (Elsayed, Lan, Lyle, Mahmood 2024, arXiv 2407.01704).

After every optimizer step each weight is clipped to [-kappa * b, kappa * b], b the bound of its
init distribution. The paper's networks draw weights from a uniform U(-b, b); the GPT draws them
from N(0, std) (model.param_init), which has no bound, so b here is the bound of the uniform with
the same variance, b = sqrt(3) * std (kappa 2 clips at 3.5 std of the init). Parameters initialised
to a constant (biases, LayerNorm) have b = 0 and are not clipped; the embeddings are (N(0, std)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from plasticlm.config import opt
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range
from plasticlm.mitigations.units import init_std
from plasticlm.model import total_params


def init_bound(model: nn.Module, name: str) -> float:
    """b of a parameter: sqrt(3) * its init std (the uniform of equal variance); 0 for constants."""
    return math.sqrt(3.0) * init_std(model, name)


@dataclass(frozen=True)
class WeightClipConfig(MitigationConfig):
    """Clip every randomly initialised weight to kappa times its init bound."""

    kappa: float = opt(2.0, "Clip to [-kappa b, kappa b], b = sqrt(3) * init std (Elsayed et al.: 2..4); "
                            "0 = off (no-op).")

    SUMMARY = "Weight clipping: after each step clip each weight to kappa times its init bound"
    CITATION = "Elsayed et al. 2024, arXiv 2407.01704"
    NOOP = {"kappa": 0.0}
    NOOP_NOTE = "kappa = 0 turns clipping off (it does not clip to 0)"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "kappa", self.kappa, 0.0, hint="0 = off; the paper uses 2..4")
        if 0.0 < self.kappa < 1.0:
            p.append(f"kappa = {self.kappa}: below 1 clips the initial weights themselves; use 0 (off) or >= 1")
        return p


class WeightClip(Mitigation):
    name = "weight_clip"

    @torch.no_grad()
    def post_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.cfg.kappa == 0.0:
            return
        for name, p in model.named_parameters():
            b = init_bound(model, name)
            if b > 0:
                p.clamp_(-self.cfg.kappa * b, self.cfg.kappa * b)

    def extra_flops_per_step(self, config, tokens_per_step: int, steps_per_task: int) -> float:
        return 0.0 if self.cfg.kappa == 0.0 else 2.0 * total_params(config)
