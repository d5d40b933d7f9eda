"""The callbacks every training run has: task-boundary reset, evaluation, train metrics, progress.

Optional ones (TensorBoard, Weights & Biases) are added by ``default_callbacks`` from the config.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from plasticlm.callbacks import Callback
from plasticlm.evaluate import bits_per_byte, fixed_windows, sequence_losses
from plasticlm.optim import reset_optimizer_state

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.data.stream import Task
    from plasticlm.train import Trainer


class TaskBoundaryReset(Callback):
    """Reset the optimizer state at every task boundary (arXiv:2606.24752: "at every task boundary the
    optimizer state is reset and the LR warm-up restarts", so that degradation is in the weights, not
    in stale Adam moments). The warm-up restart is part of ``LRSchedule``. On a stationary stream the
    boundaries are every task-worth of tokens: the paper does not say whether its stationary control
    reset, and resetting there too makes it differ from the continual run only in the data order
    (``optim.reset_at_task_start = false`` for a run without resets)."""

    name = "task_boundary_reset"

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def on_task_start(self, loop: Trainer, task: Task) -> None:
        if self.enabled:
            reset_optimizer_state(loop.optimizer)


class Evaluator(Callback):
    """Validation loss and bits per byte on every training language and the probe language.

    Runs at fit start (step 0) and after every ``eval.every_tasks`` tasks, on ``eval.sequences``
    fixed windows per language, and writes ``val/<lang>/loss`` and ``val/<lang>/bpb``.
    """

    name = "evaluator"

    def __init__(self, loop: Trainer):
        cfg = loop.cfg
        self.every = cfg.eval.every_tasks
        langs = list(dict.fromkeys(loop.stream.sources + [cfg.probe.language]))
        self.windows = {
            lang: fixed_windows(loop.data.val[lang], cfg.eval.sequences, cfg.model.seq_len)
            for lang in langs
            if lang in loop.data.val
        }

    def evaluate(self, loop: Trainer) -> dict[str, float]:
        results: dict[str, float] = {}
        # the permutation of the task being (or just) trained; before training, task 0's
        task_index = loop.task.index if loop.task is not None else 0
        perm = loop.stream.permutation(task_index) if loop.stream.kind == "permuted" else None
        for lang, windows in self.windows.items():
            w = perm[windows] if perm is not None and lang in loop.stream.sources else windows
            loss = float(np.mean(sequence_losses(loop.model, w, loop.cfg.eval.batch_size, loop.device,
                                                 loop.cfg.train.dtype)))
            results[f"val/{lang}/loss"] = loss
            results[f"val/{lang}/bpb"] = bits_per_byte(loss, loop.data.bytes_per_token[lang])
        return results

    def _run(self, loop: Trainer) -> None:
        results = self.evaluate(loop)
        loop.log(results)
        loop.callbacks.fire("on_evaluate", loop, results)

    def on_fit_start(self, loop: Trainer) -> None:
        if self.every > 0 and loop.stream.step == 0:
            self._run(loop)

    def on_task_end(self, loop: Trainer, task: Task) -> None:
        if self.every > 0 and ((task.index + 1) % self.every == 0 or loop.stream.done):
            self._run(loop)


class TrainMetrics(Callback):
    """``train/loss`` (mean over the logging window), ``train/lr``, ``train/grad_norm``,
    ``train/tokens``, ``train/tokens_per_s`` every ``train.log_every`` steps and at every task end
    (so no partial window is carried across a checkpoint)."""

    name = "train_metrics"

    def __init__(self, every: int):
        self.every = max(1, every)
        self._reset()

    def _reset(self) -> None:
        self.losses: list[float] = []
        self.t0 = time.perf_counter()

    def on_task_start(self, loop: Trainer, task: Task) -> None:
        self._reset()

    def _flush(self, loop: Trainer) -> None:
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

    def on_step_end(self, loop: Trainer, loss: float) -> None:
        self.losses.append(loss)
        if len(self.losses) >= self.every:
            self._flush(loop)

    def on_task_end(self, loop: Trainer, task: Task) -> None:
        self._flush(loop)


class ProgressBar(Callback):
    """A tqdm bar on stderr: task, cycle, language, tokens, tokens/s and loss."""

    name = "progress"

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.loss = float("nan")

    def on_fit_start(self, loop: Trainer) -> None:
        if not self.enabled:
            return
        from plasticlm.progress import progress_bar

        self.bar = progress_bar(total=loop.stream.total_steps, initial=loop.stream.step, unit="step",
                                desc=loop.run_dir.name)
        self.t0, self.s0 = time.perf_counter(), loop.stream.step

    def on_step_end(self, loop: Trainer, loss: float) -> None:
        if self.bar is None:
            return
        self.loss = loss if self.loss != self.loss else 0.9 * self.loss + 0.1 * loss
        self.bar.update(1)
        if loop.stream.step % 5 == 0 or loop.stream.done:
            task = loop.stream.task(min(loop.stream.task_index, loop.stream.num_tasks - 1))
            tok_s = (loop.stream.step - self.s0) * loop.tokens_per_step / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(
                f"task {task.index + 1}/{loop.stream.num_tasks} cycle {task.cycle + 1} {task.lang} "
                f"tok {loop.tokens / 1e6:.2f}M {tok_s / 1e3:.1f}k tok/s loss {self.loss:.3f}", refresh=False)

    def on_fit_end(self, loop: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TensorBoard(Callback):
    """Mirror every metrics row to TensorBoard (``train.tensorboard = true``; needs the extra)."""

    name = "tensorboard"

    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            from plasticlm.errors import PlasticError

            raise PlasticError(
                "train.tensorboard = true needs TensorBoard: pip install 'plasticlm[tensorboard]'"
            ) from e
        self.make_writer = lambda: SummaryWriter(str(log_dir))
        self.writer = None  # made at the first row: a run that fails to build writes nothing

    def on_log(self, loop: Trainer, row: dict[str, Any]) -> None:
        if self.writer is None:
            self.writer = self.make_writer()
        for k, v in _scalars(row).items():
            self.writer.add_scalar(k, v, global_step=row["step"])

    def on_fit_end(self, loop: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """The namespaced numeric metrics of a metrics row (``train/loss``, ``val/en/bpb``, ``probe/auc``)."""
    return {k: v for k, v in row.items() if "/" in k and isinstance(v, int | float) and not isinstance(v, bool)}


class WandB(Callback):
    """Mirror every metrics row (train, validation and probe scores) and the resolved config to Weights &
    Biases (``train.wandb = true``; needs the wandb extra). Offline by default: the run is written under
    ``RUN_DIR/logs/wandb`` and ``wandb sync`` uploads it later. The W&B run id is callback state, so a
    resumed run logs under the same W&B run id (rows of the rolled-back steps are logged again)."""

    name = "wandb"

    def __init__(self, loop: Trainer):
        try:
            import wandb
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            from plasticlm.errors import PlasticError

            raise PlasticError("train.wandb = true needs Weights & Biases: pip install 'plasticlm[wandb]'") from e
        self.wandb = wandb
        self.run = None
        self.run_id = uuid.uuid4().hex[:12]

    def _start(self, loop: Trainer) -> None:
        from plasticlm.config import to_dict

        log_dir = loop.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        t = loop.cfg.train
        self.run = self.wandb.init(
            project=t.wandb_project, name=loop.run_dir.name, id=self.run_id, resume="allow", dir=str(log_dir),
            mode=t.wandb_mode, config=to_dict(loop.cfg), settings=self.wandb.Settings(silent=True, console="off"),
        )

    def on_log(self, loop: Trainer, row: dict[str, Any]) -> None:
        if self.run is None:  # at the first row (the step-0 evaluation is logged at fit start)
            self._start(loop)
        self.run.log({**_scalars(row), "tokens": row["tokens"], "task_index": row["task_index"]}, step=row["step"])

    def on_fit_end(self, loop: Trainer) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id", self.run_id)
