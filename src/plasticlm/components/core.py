"""The components every training run has: task-boundary reset, train metrics, evaluation, progress."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from plasticlm.components.base import Component, LoopView
from plasticlm.components.registry import register
from plasticlm.evaluate import bits_per_byte, fixed_windows, sequence_losses_across_ranks
from plasticlm.optim import reset_optimizer_state
from plasticlm.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.data.stream import Task


@register("task_reset")
class TaskBoundaryReset(Component):
    """Reset the optimizer state at every task boundary (``optim.reset_at_task_start``).

    arXiv:2606.24752: "at every task boundary the optimizer state is reset and the LR warm-up
    restarts", so that degradation is in the weights, not in stale Adam moments. The warm-up restart
    is part of ``LRSchedule``. On a stationary stream the boundaries are every task-worth of tokens:
    the paper does not say whether its stationary control reset, and resetting there too makes it
    differ from the continual run only in the data order (``optim.reset_at_task_start = false`` for
    a run without resets)."""

    def __init__(self, loop: LoopView, options: None = None):
        self.enabled = loop.cfg.optim.reset_at_task_start

    def on_task_start(self, loop: LoopView, task: Task) -> None:
        if self.enabled:
            reset_optimizer_state(loop.optimizer)


@register("evaluate")
class Evaluator(Component):
    """Validation loss and bits per byte on every training language and the probe language.

    Runs at fit start (step 0) and after every ``eval.every_tasks`` tasks, on ``eval.sequences``
    fixed windows per language, and writes ``val/<lang>/loss`` and ``val/<lang>/bpb``.
    """

    def __init__(self, loop: LoopView, options: None = None):
        cfg = loop.cfg
        self.every = cfg.eval.every_tasks
        langs = list(dict.fromkeys(loop.stream.sources + [cfg.probe.language]))
        self.windows = {
            lang: fixed_windows(loop.data.val[lang], cfg.eval.sequences, cfg.model.seq_len)
            for lang in langs
            if lang in loop.data.val
        }

    def evaluate(self, loop: LoopView) -> dict[str, float]:
        results: dict[str, float] = {}
        # the permutation of the task being (or just) trained; before training, task 0's
        task_index = loop.task.index if loop.task is not None else 0
        perm = loop.stream.permutation(task_index) if loop.stream.kind == "permuted" else None
        for lang, windows in self.windows.items():
            w = perm[windows] if perm is not None and lang in loop.stream.sources else windows
            # split over ranks under torchrun: every rank takes part (a sharded model needs them all)
            loss = float(np.mean(sequence_losses_across_ranks(loop.model, w, loop.cfg.eval.batch_size, loop.device,
                                                              loop.cfg.train.dtype)))
            results[f"val/{lang}/loss"] = loss
            results[f"val/{lang}/bpb"] = bits_per_byte(loss, loop.data.bytes_per_token[lang])
        return results

    def on_fit_start(self, loop: LoopView) -> None:
        if self.every > 0 and loop.step == 0:
            loop.report_evaluation(self.evaluate(loop))

    def on_task_end(self, loop: LoopView, task: Task) -> None:
        if self.every > 0 and ((task.index + 1) % self.every == 0 or loop.stream.done):
            loop.report_evaluation(self.evaluate(loop))


@register("train_metrics")
class TrainMetrics(Component):
    """``train/loss`` (mean over the logging window), ``train/lr``, ``train/grad_norm`` and
    ``train/tokens_per_s`` every ``train.log_every`` steps and at every task end (so no partial window
    is carried across a checkpoint)."""

    def __init__(self, loop: LoopView, options: None = None):
        self.every = max(1, loop.cfg.train.log_every)
        self._reset()

    def _reset(self) -> None:
        self.losses: list[float] = []
        self.t0 = time.perf_counter()

    def on_task_start(self, loop: LoopView, task: Task) -> None:
        self._reset()

    def _flush(self, loop: LoopView) -> None:
        if not self.losses:
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        loop.log({
            "train/loss": float(np.mean(self.losses)),
            "train/lr": loop.lr,
            "train/grad_norm": loop.grad_norm,
            "train/tokens_per_s": len(self.losses) * loop.tokens_per_step / dt,
        })
        self._reset()

    def on_step_end(self, loop: LoopView, loss: float) -> None:
        self.losses.append(loss)
        if len(self.losses) >= self.every:
            self._flush(loop)

    def on_task_end(self, loop: LoopView, task: Task) -> None:
        self._flush(loop)


@register("progress")
class ProgressBar(Component):
    """A tqdm bar on stderr: task, cycle, language, tokens, tokens/s and loss (off when quiet)."""

    def __init__(self, loop: LoopView, options: None = None):
        self.enabled = loop.is_main and not loop.quiet
        self.bar = None
        self.loss = float("nan")

    def on_fit_start(self, loop: LoopView) -> None:
        if not self.enabled:
            return
        self.bar = progress_bar(total=loop.stream.total_steps, initial=loop.step, unit="step",
                                desc=loop.run_dir.name)
        self.t0, self.s0 = time.perf_counter(), loop.step

    def on_step_end(self, loop: LoopView, loss: float) -> None:
        if self.bar is None:
            return
        self.loss = loss if self.loss != self.loss else 0.9 * self.loss + 0.1 * loss
        self.bar.update(1)
        stream = loop.stream
        if stream.step % 5 == 0 or stream.done:
            task = stream.task(min(stream.task_index, stream.num_tasks - 1))
            tok_s = (stream.step - self.s0) * loop.tokens_per_step / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(
                f"task {task.index + 1}/{stream.num_tasks} cycle {task.cycle + 1} {task.lang} "
                f"tok {loop.tokens / 1e6:.2f}M {tok_s / 1e3:.1f}k tok/s loss {self.loss:.3f}", refresh=False)

    def on_fit_end(self, loop: LoopView) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
