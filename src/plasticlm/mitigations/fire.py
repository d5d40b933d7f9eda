"""FIRE: Frobenius-isometry reinitialisation (Han et al. 2026, ICLR, arXiv 2602.08040).

At a task switch, each weight matrix W is replaced by the nearest matrix with orthonormal rows or
columns, the orthogonal polar factor W (W^T W)^{-1/2} (the solution of min ||W - W~||_F subject to
W~ being an isometry), approximated by Newton-Schulz iterations X <- 1.5 X - 0.5 X X^T X from
X = W / ||W||_F, and scaled by sqrt(d_out / d_in) as in the authors' code (``scale = "isometry"``).
The fused ``attn.qkv`` weight holds Q, K and V as three row blocks (model.py); each is
orthogonalised on its own, as the paper does for GPT-2's fused attention. Targets: Q, K, V,
attn.proj, mlp.fc and mlp.proj of every block; biases and LayerNorm are left as they are; the tied
embedding only with ``embedding = true`` (the authors' LLM code reaches it through the tied output
head). The optimizer state of every changed tensor is dropped (each tensor changes as a whole).

``scale = "norm"`` is this project's variant, not the paper's: it rescales the orthogonal factor to
W's Frobenius norm, for models whose init std is far from 1 / sqrt(d_in) (the GPT's 0.02).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from plasticlm.config import opt
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range, task_switches
from plasticlm.mitigations.units import block_linear_weights, gpt_of


def newton_schulz(w: torch.Tensor, iterations: int) -> torch.Tensor:
    """Approximate orthogonal polar factor of a 2-D matrix (float32 at least): cubic Newton-Schulz
    on X = W / ||W||_F, on the tall orientation. A zero matrix stays zero."""
    x = w.detach().to(torch.promote_types(w.dtype, torch.float32))
    wide = x.shape[0] < x.shape[1]
    if wide:
        x = x.T
    norm = torch.linalg.matrix_norm(x)
    if norm == 0:
        return torch.zeros_like(w)
    x = x / norm
    for _ in range(iterations):
        x = 1.5 * x - 0.5 * x @ (x.T @ x)
    return (x.T if wide else x).to(w.dtype)


@dataclass(frozen=True)
class FIREConfig(MitigationConfig):
    """Orthogonalising reset of the weight matrices at task switches."""

    every_tasks: int = opt(1, "Apply at every N-th task switch (task index divisible by N); 0 = never (no-op).")
    iterations: int = opt(10, "Newton-Schulz iterations (the authors' code: 5..10).")
    scale: Literal["isometry", "norm"] = opt("isometry", "Scale of the orthogonal factor: sqrt(d_out / d_in) "
                                                         "(the paper), or W's own Frobenius norm.")
    embedding: bool = opt(False, "Also orthogonalise the tied token embedding (the authors' LLM code does).")

    SUMMARY = "FIRE: replace each weight matrix (Q, K, V separately) by its scaled orthogonal polar factor"
    CITATION = "Han et al. 2026, ICLR, arXiv 2602.08040"
    NOOP = {"every_tasks": 0}
    NOOP_NOTE = "never applied"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "every_tasks", self.every_tasks, 0)
        check_range(p, "iterations", self.iterations, 1, hint="Newton-Schulz needs at least one iteration")
        return p


def fire_blocks(model: nn.Module) -> list[tuple[str, torch.Tensor, list[tuple[int, int]]]]:
    """(name, weight, row ranges) of every matrix FIRE orthogonalises: qkv as its Q, K, V row blocks,
    the other block linears whole."""
    attn_dim = gpt_of(model).config.attn_dim
    out = []
    for name, w in block_linear_weights(model):
        if name.endswith("attn.qkv.weight"):
            out.append((name, w, [(i * attn_dim, (i + 1) * attn_dim) for i in range(3)]))
        else:
            out.append((name, w, [(0, w.shape[0])]))
    return out


class FIRE(Mitigation):
    name = "fire"

    @torch.no_grad()
    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        targets = fire_blocks(model)
        if self.cfg.embedding:
            wte = gpt_of(model).wte.weight
            targets.append(("wte.weight", wte, [(0, wte.shape[0])]))
        for _, w, ranges in targets:
            for lo, hi in ranges:
                block = w[lo:hi]
                ortho = newton_schulz(block, self.cfg.iterations)
                if self.cfg.scale == "isometry":
                    factor = math.sqrt(block.shape[0] / block.shape[1])
                else:
                    norm = torch.linalg.matrix_norm(ortho)
                    factor = float(torch.linalg.matrix_norm(block) / norm) if norm > 0 else 0.0
                block.copy_(ortho * factor)
            if optimizer is not None:
                optimizer.state.pop(w, None)

    def on_task_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, task) -> None:
        every = self.cfg.every_tasks
        if every > 0 and task_switches(task) and task.index % every == 0:
            self.apply(model, optimizer)

    def extra_flops_per_step(self, config, tokens_per_step: int, steps_per_task: int) -> float:
        if self.cfg.every_tasks <= 0:
            return 0.0
        d, a = config.d_model, config.attn_dim
        shapes = ([(a, d)] * 3 + [(d, a), (4 * d, d), (d, 4 * d)]) * config.n_layer
        if self.cfg.embedding:
            shapes.append((config.vocab_size, d))
        # per iteration on a tall m x n matrix: X^T X and X (X^T X), 2 m n^2 each, plus 3 m n
        total = sum(self.cfg.iterations * (4 * max(m, n) * min(m, n) ** 2 + 3 * m * n) for m, n in shapes)
        return total / (max(1, steps_per_task) * self.cfg.every_tasks)
