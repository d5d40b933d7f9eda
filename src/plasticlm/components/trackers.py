"""Experiment trackers: every metrics row mirrored to TensorBoard or Weights & Biases.

Both are optional dependencies (extras), imported when a run turns them on; neither is needed to run.
"""

from __future__ import annotations

import uuid
from typing import Any

from plasticlm.components.base import Component, LoopView
from plasticlm.components.registry import register
from plasticlm.config import to_dict
from plasticlm.errors import PlasticError


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """The namespaced numeric metrics of a metrics row (``train/loss``, ``val/en/bpb``, ``probe/auc``)."""
    return {k: v for k, v in row.items() if "/" in k and isinstance(v, int | float) and not isinstance(v, bool)}


@register("tensorboard")
class TensorBoard(Component):
    """Mirror every metrics row to TensorBoard under RUN_DIR/logs/tensorboard (``train.tensorboard =
    true``; needs the tensorboard extra)."""

    def __init__(self, loop: LoopView, options: None = None):
        self.enabled = loop.cfg.train.tensorboard and loop.is_main
        self.writer = None  # made at the first row: a run that fails to build writes nothing
        if not self.enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise PlasticError(
                "train.tensorboard = true needs TensorBoard: pip install 'plasticlm[tensorboard]'") from e
        log_dir = loop.run_dir / "logs" / "tensorboard"
        self.make_writer = lambda: SummaryWriter(str(log_dir))

    def on_log(self, loop: LoopView, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.writer is None:
            self.writer = self.make_writer()
        for k, v in _scalars(row).items():
            self.writer.add_scalar(k, v, global_step=row["step"])

    def on_fit_end(self, loop: LoopView) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@register("wandb")
class WandB(Component):
    """Mirror every metrics row (train, validation and probe scores) and the resolved config to Weights &
    Biases (``train.wandb = true``; needs the wandb extra).

    Offline by default: the run is written under ``RUN_DIR/logs/wandb`` and ``wandb sync`` uploads it
    later. The W&B run id is component state, so a resumed run logs under the same W&B run id (rows of
    the rolled-back steps are logged again)."""

    def __init__(self, loop: LoopView, options: None = None):
        self.enabled = loop.cfg.train.wandb and loop.is_main
        self.run = None
        self.run_id = uuid.uuid4().hex[:12]
        if not self.enabled:
            return
        try:
            import wandb
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise PlasticError("train.wandb = true needs Weights & Biases: pip install 'plasticlm[wandb]'") from e
        self.wandb = wandb

    def _start(self, loop: LoopView) -> None:
        log_dir = loop.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        t = loop.cfg.train
        self.run = self.wandb.init(
            project=t.wandb_project, name=loop.run_dir.name, id=self.run_id, resume="allow", dir=str(log_dir),
            mode=t.wandb_mode, config=to_dict(loop.cfg), settings=self.wandb.Settings(silent=True, console="off"),
        )

    def on_log(self, loop: LoopView, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.run is None:  # at the first row (the step-0 evaluation is logged at fit start)
            self._start(loop)
        self.run.log({**_scalars(row), "tokens": row["tokens"], "task_index": row["task_index"]}, step=row["step"])

    def on_fit_end(self, loop: LoopView) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.enabled else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id", self.run_id)
