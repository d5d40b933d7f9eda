"""Plasticity diagnostics during training: the ``diagnostics`` loop component.

At every probe point (the task boundaries ``[probe]`` schedules) and, with ``every_steps > 0``, every
that many optimizer steps, it runs ``diagnose.diagnose_model`` on the run's fixed held-out batches in
eval mode (MLP dormancy, GraMa and feature ranks per layer on the probe language; attention entropy
per head on a training language, chunked so that no B x H x T x T tensor exists; the residual
stream's effective rank; parameter statistics and drift from the initial weights) and appends one row
to ``diagnostics.jsonl``, in the format of `plasticlm diagnose` (which then skips those points). It
draws no randomness and leaves the gradients as they were, so training is bit-identical with it on or
off. Not in the default ``train.components``: add ``"diagnostics"`` to turn it on.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from plasticlm.checkpoint import checkpoint_name
from plasticlm.components.base import Component, LoopView
from plasticlm.components.registry import register
from plasticlm.config import opt
from plasticlm.diagnose import LOG, DiagnoseOptions, diagnose_model, held_out_windows
from plasticlm.errors import PlasticError
from plasticlm.probe import probe_task_indices

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.data.stream import Task


@dataclass
class DiagnosticsOptions:
    """``[components.diagnostics]``: when to diagnose, and the held-out batches (as `plasticlm diagnose`)."""

    every_steps: int = opt(0, "Also diagnose every N optimizer steps; 0 = at the probe points only.")
    sequences: int = opt(8, "Probe-language validation windows for dormancy, ranks and the gradient batch.")
    attn_sequences: int = opt(4, "Training-language validation windows for attention entropy.")
    attn_language: str = opt("", "Language of the attention-entropy windows; '' = the first training language.")
    query_start: int = opt(-1, "First query position of the entropy window; -1 = seq_len // 8 (arXiv:2606.24752).")
    chunk: int = opt(256, "Queries per block of the chunked attention entropy.")
    batch_size: int = opt(8, "Windows per forward pass.")
    rank_tokens: int = opt(4096, "Most token rows per layer in a rank metric.")
    grads: bool = opt(True, "One backward pass on a probe-language batch: GraMa and per-block gradient norms.")
    hessian: bool = opt(False, "Top Hessian eigenvalue by power iteration (costly).")


@register("diagnostics", options=DiagnosticsOptions)
class Diagnostics(Component):
    """Plasticity diagnostics at the probe points (and every N steps) on fixed held-out batches, in eval
    mode; rows in diagnostics.jsonl (the format of `plasticlm diagnose`)."""

    def __init__(self, loop: LoopView, options: DiagnosticsOptions):
        cfg, s = loop.cfg, loop.stream
        self.every = options.every_steps
        if self.every < 0:
            raise PlasticError(f"components.diagnostics.every_steps = {self.every}: must be >= 0 "
                               "(0 = at the probe points only)")
        names = {f.name for f in dataclasses.fields(DiagnoseOptions)}
        self.options = DiagnoseOptions(**{k: v for k, v in asdict(options).items() if k in names})
        self.options.check(cfg.model.seq_len)
        self.points = set(probe_task_indices(cfg, s.num_tasks, s.tasks_per_cycle, s.tokens_per_task))
        self.log = loop.open_log(LOG)
        # theta_0 for the drift: the model as built, before any step (a resumed run rebuilds it the same way)
        # (full weights: under FSDP a gathered copy, collective like every diagnostics row)
        self.init_state = {k: v.detach().to("cpu", copy=True) for k, v in loop.full_model().state_dict().items()}

    def _row(self, loop: LoopView, task: Task | None, name: str) -> None:
        t0 = time.perf_counter()
        task_index = task.index if task is not None else 0
        probe, attn, attn_lang = held_out_windows(loop.cfg, loop.data, loop.gpt_config.vocab_size, self.options,
                                                  task_index)
        diag = diagnose_model(loop.full_model(), probe, attn, self.options, self.init_state, loop.device)
        cfg = loop.cfg
        settings = {**asdict(self.options), "attn_language": attn_lang,
                    "query_start": int(diag["diag/attn/query_start"]),
                    "probe_language": cfg.stream.permuted_base if cfg.stream.kind == "permuted" else cfg.probe.language}
        if loop.is_main:
            self.log.append({"checkpoint": name, "task_index": task_index + 1 if task is not None else 0,
                             "cycle": task.cycle if task is not None else None,
                             "lang": task.lang if task is not None else None, "tokens_seen": loop.tokens,
                             "step": loop.step, "seconds": round(time.perf_counter() - t0, 3),
                             "settings": settings, **diag})

    def on_task_end(self, loop: LoopView, task: Task) -> None:
        if task.index in self.points:
            self._row(loop, task, checkpoint_name(task.index))

    def on_step_end(self, loop: LoopView, loss: float) -> None:
        if self.every and loop.step % self.every == 0:
            self._row(loop, loop.task, f"step-{loop.step:08d}")
