"""The optimisation recipe of arXiv:2606.24752 ("Optimisation"): AdamW, per-size LR, warm-up.

Weight decay applies to every 2-D weight (linear weights, the tied token embedding, the position
embedding) and not to biases or LayerNorm parameters (the nanoGPT / GPT-2 convention; the paper does
not say). ``optim.decay_embeddings = false`` leaves the two embeddings undecayed.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from plasticlm.errors import PlasticError


def peak_lr(optim_cfg, non_embedding_params: int) -> float:
    """``optim.lr`` if set, else a power law in the non-embedding count through two anchors.

    Paper defaults: 3e-3 at 5M (4,933,120) and 1e-3 at 314M (314,859,520), interpolated between sizes
    (arXiv:2606.24752: "a power law in the non-embedding count through the two end points"). Sizes
    outside the anchors (the CPU micro ladder) extrapolate the same law.
    """
    if optim_cfg.lr > 0:
        return float(optim_cfg.lr)
    (p0, p1), (l0, l1) = optim_cfg.lr_anchor_params, optim_cfg.lr_anchor_values
    slope = math.log(l1 / l0) / math.log(p1 / p0)
    return float(l0 * (non_embedding_params / p0) ** slope)


EMBEDDINGS = ("wte.weight", "wpe.weight")
"""The token embedding (tied with the output head) and the position embedding, by module name."""


def param_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = True) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = p.ndim >= 2 and (decay_embeddings or name not in EMBEDDINGS)
        (decay if decayed else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


IMPL_KWARGS: dict[str, dict[str, bool]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "forloop": {"foreach": False},
}
"""``optim.impl`` -> torch.optim.AdamW keyword: one fused kernel over all parameters (CPU and CUDA, the
default: benchmarks/bench_loop_vs_eager.py), torch's multi-tensor path, or the per-parameter loop
(torch's CPU default). The three compute the same update up to float rounding."""


def build_optimizer(model: nn.Module, optim_cfg, lr: float) -> torch.optim.AdamW:
    impl = optim_cfg.impl
    if impl not in IMPL_KWARGS:
        raise PlasticError(f"optim.impl = {impl!r}: use one of {', '.join(IMPL_KWARGS)}")
    return torch.optim.AdamW(
        param_groups(model, optim_cfg.weight_decay, optim_cfg.decay_embeddings),
        lr=lr,
        betas=(optim_cfg.beta1, optim_cfg.beta2),
        eps=optim_cfg.eps,
        **IMPL_KWARGS[impl],
    )


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Drop all per-parameter state (Adam moments and step counts): the paper's task-boundary reset."""
    optimizer.state = defaultdict(dict)


class LRSchedule:
    """Linear warm-up (``warmup_frac`` of a task's steps), then constant (paper) or cosine.

    With ``restart_each_task`` (default ``optim.rewarm_at_task_start``) the schedule restarts at every
    task (the paper; on a stationary stream every task-worth of tokens); otherwise it runs once over the
    whole run (warm-up of the same length at the start only).
    """

    def __init__(self, optim_cfg, peak: float, steps_per_task: int, total_steps: int,
                 restart_each_task: bool | None = None):
        if steps_per_task <= 0:
            raise PlasticError("LR schedule needs at least one step per task")
        self.cfg = optim_cfg
        self.peak = peak
        self.steps_per_task = steps_per_task
        self.total_steps = total_steps
        self.warmup = math.ceil(optim_cfg.warmup_frac * steps_per_task)
        self.restart = optim_cfg.rewarm_at_task_start if restart_each_task is None else restart_each_task

    def __call__(self, global_step: int) -> float:
        if self.restart:
            s, horizon = global_step % self.steps_per_task, self.steps_per_task
        else:
            s, horizon = global_step, self.total_steps
        if s < self.warmup:
            return self.peak * (s + 1) / self.warmup
        if self.cfg.schedule == "constant":
            return self.peak
        progress = (s - self.warmup) / max(1, horizon - self.warmup)
        floor = self.peak * self.cfg.min_lr_frac
        return floor + (self.peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
