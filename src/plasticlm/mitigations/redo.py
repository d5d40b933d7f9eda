"""ReDo: recycle dormant MLP units (Sokar et al. 2023, arXiv 2302.12902).

Every ``every`` optimizer steps, one forward pass without gradient, in eval mode, on a reference
batch records each block's MLP activations (GeLU output); units whose layer-normalised score
s_i = hbar_i / mean_k hbar_k is <= tau (``plasticlm.diagnostics.dormant_mask``: score-based, so it
is meaningful for GeLU, where a test h == 0 is not) are reset with ``reset_units``: incoming weights
re-drawn from the init, bias 0, outgoing weights 0, their optimizer state zeroed.

The reference batch is a held-out batch (diagnostics spec: "on a held-out batch"), given by the
loop with ``set_held_out(inputs)``, e.g. validation windows of the current language; with
``batch = "train"`` it is the step's own training inputs (as ReDo's code used a replay batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from plasticlm.config import opt
from plasticlm.diagnostics import dormant_mask
from plasticlm.errors import PlasticError
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range
from plasticlm.mitigations.units import init_std, mlp_layers, reset_units
from plasticlm.model import flops_per_token


@dataclass(frozen=True)
class ReDoConfig(MitigationConfig):
    """ReDo on MLP hidden units."""

    tau: float = opt(0.025, "Dormancy threshold on the layer-normalised score (Sokar et al.: 0.025 by default, "
                            "0.1 in some settings).")
    every: int = opt(1000, "F: check and reset every F optimizer steps (Sokar et al.: 1,000); 0 = never (no-op).")
    batch: Literal["held_out", "train"] = opt("held_out", "Reference batch of the dormancy score: the batch given "
                                                          "by set_held_out (spec), or the step's training inputs.")
    sequences: int = opt(0, "Sequences of the reference batch used; 0 = all.")

    SUMMARY = "ReDo: every F steps reset the MLP units whose dormancy score is <= tau"
    CITATION = "Sokar et al. 2023, arXiv 2302.12902"
    NOOP = {"every": 0}
    NOOP_NOTE = "never measures and never resets"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "tau", self.tau, 0.0, 1.0, hint="a fraction of the layer's mean activity")
        check_range(p, "every", self.every, 0)
        check_range(p, "sequences", self.sequences, 0)
        return p


class ReDo(Mitigation):
    name = "redo"

    def __init__(self, cfg: ReDoConfig, seed: int = 0):
        super().__init__(cfg, seed)
        self.held_out: torch.Tensor | None = None
        self._batch: torch.Tensor | None = None
        self.resets = 0
        self.last_reset: list[torch.Tensor] = []

    def set_held_out(self, inputs) -> None:
        """The (B, T) token ids the dormancy score is measured on when ``batch = "held_out"``."""
        self.held_out = torch.as_tensor(inputs, dtype=torch.long)

    def on_step_start(self, batch) -> None:
        if self.cfg.batch == "train" and self.cfg.every > 0:
            self._batch = torch.as_tensor(batch[0] if isinstance(batch, tuple | list) else batch, dtype=torch.long)

    def _reference(self) -> torch.Tensor:
        x = self.held_out if self.cfg.batch == "held_out" else self._batch
        if x is None:
            raise PlasticError("redo: no reference batch: with redo.batch = 'held_out' the loop must call "
                               "set_held_out(inputs) before training (or set redo.batch = 'train')")
        return x[: self.cfg.sequences] if self.cfg.sequences > 0 else x

    @torch.no_grad()
    def dormant_units(self, model: nn.Module) -> list[torch.Tensor]:
        """Bool mask per block MLP of the units with score <= tau on the reference batch."""
        mlps = [m for _, m in mlp_layers(model)]
        acts: list[torch.Tensor | None] = [None] * len(mlps)

        def recorder(i):
            def hook(module, inputs, output):
                acts[i] = output.detach()
            return hook

        hooks = [m.act.register_forward_hook(recorder(i)) for i, m in enumerate(mlps)]
        was_training = model.training
        try:
            model.eval()
            device = next(model.parameters()).device
            model(self._reference().to(device))
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        return [dormant_mask(a, self.cfg.tau).cpu() for a in acts]

    @torch.no_grad()
    def post_optim_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        self.last_reset = []
        if self.cfg.every <= 0 or step % self.cfg.every:
            return
        for (name, mlp), mask in zip(mlp_layers(model), self.dormant_units(model)):
            idx = torch.nonzero(mask).flatten()
            reset_units(mlp.fc, mlp.proj, idx, optimizer, self.generator, init_std(model, f"{name}.fc.weight"))
            self.resets += idx.numel()
            self.last_reset.append(idx)

    def rank_local_statistics(self) -> str | None:
        if self.cfg.batch != "train":
            return None
        return ("ReDo's scores on the training batch come from this rank's rows of it; set mitigations.redo.batch = "
                "\"held_out\" (the default), or run on one process")

    def extra_flops_per_step(self, config, tokens_per_step: int, steps_per_task: int) -> float:
        if self.cfg.every <= 0:
            return 0.0
        # one forward pass (a third of the 6N training FLOPs per token) on the reference batch; the
        # held-out batch's size is the loop's, so the training batch's token count stands in for it
        tokens = tokens_per_step
        if self.cfg.sequences > 0:
            tokens = min(tokens, self.cfg.sequences * config.seq_len)
        return flops_per_token(config) / 3 * tokens / self.cfg.every

    def _state(self) -> dict:
        return {"resets": self.resets}

    def _load_state(self, state: dict) -> None:
        self.resets = int(state["resets"])
