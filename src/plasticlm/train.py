"""The training loop: one model on the continual (or stationary, or permuted) language stream.

The loop reads top to bottom (``Trainer.fit``); evaluation, probes, diagnostics and mitigations hang
off it as callbacks (``callbacks.py``). Everything needed to continue is state: model, optimizer,
stream position and RNG, torch RNG, loop counters (derived from the stream), callback states and
the row counts of the run's JSONL logs. A resumed run therefore ends with the same weights, bit for
bit on CPU, as an uninterrupted one.

Run directory (stable; other tools read it)::

    RUN_DIR/
      config.toml        the resolved config
      run.json           status, code version (git commit), package versions, wall time
      metrics.jsonl      one JSON row per log event: step, tokens, task_index, cycle, lang + metrics
      probes.jsonl       one row per plasticity probe (when probes run)
      checkpoints/       task-NNNNNN/ {model.safetensors, optim.pt, rng.pt, meta.json}, latest
      logs/train.log     human-readable log
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from plasticlm import dist
from plasticlm.callbacks import Callback, Callbacks
from plasticlm.checkpoint import (
    checkpoint_name,
    latest_valid_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from plasticlm.config import Config, dumps_toml, load_config, to_dict
from plasticlm.data.stream import LanguageStream, Task
from plasticlm.errors import NonFiniteLoss, PlasticError
from plasticlm.evaluate import autocast_context
from plasticlm.model import GPT, build_gpt_config, configure_cpu, non_embedding_params
from plasticlm.optim import LRSchedule, build_optimizer, peak_lr, set_lr
from plasticlm.plan import check_reuse, format_reuse
from plasticlm.runlock import LOCK_NAME, run_lock
from plasticlm.runlog import JsonlLog, atomic_write_json, atomic_write_text, environment_info, read_json, read_jsonl
from plasticlm.train_callbacks import Evaluator, ProgressBar, TaskBoundaryReset, TensorBoard, TrainMetrics, WandB

log = logging.getLogger("plasticlm.train")


CallbackSpec = Callback | Callable[["Trainer"], Callback]
"""A callback, or a factory called with the trainer once it is built (e.g. ``ProbeCallback``)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PlasticError(f"train.device = {name!r} but no CUDA device is available: use --set train.device=cpu")
    return dev


class Trainer:
    """One training run. Build it, optionally ``restore()``, then ``fit()``."""

    def __init__(self, cfg: Config, run_dir: str | Path, data: Any, callbacks: list[CallbackSpec] | None = None,
                 quiet: bool = False):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.data = data
        configure_cpu(cfg.train.threads)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or dist.world_size() > 1:
            raise PlasticError(
                "multi-process training (torchrun, WORLD_SIZE > 1) is not supported yet: gradients would not "
                "be synchronised; run one process per run (`plasticlm sweep --parallel N` runs several)"
            )
        self.device = resolve_device(cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        self.gpt_config = build_gpt_config(cfg.model, data.vocab_size)
        self.model = GPT(self.gpt_config).to(self.device)
        if cfg.model.init_from:  # a transformers GPT-2 checkpoint instead of a fresh init (consumes no RNG)
            from plasticlm.hf import load_gpt2_into

            load_gpt2_into(self.model, cfg.model.init_from)
        self.model.train()
        self.non_embedding_params = non_embedding_params(self.gpt_config)
        self.stream = LanguageStream(cfg.stream, data.train, cfg.model.seq_len, cfg.train.batch_size,
                                     self.gpt_config.vocab_size, rank=dist.rank(), world_size=dist.world_size())
        self.reuse_factors = check_reuse(cfg, {lang: len(arr) for lang, arr in data.train.items()}, "train")
        if max(self.reuse_factors.values(), default=0.0) > 1.0 and not quiet and dist.is_main():
            print(f"plasticlm: data reuse (stream.allow_reuse = true), a language's training tokens read x times: "
                  f"{format_reuse(self.reuse_factors)}", file=sys.stderr)
        self.tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
        self.peak_lr = peak_lr(cfg.optim, self.non_embedding_params)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.peak_lr)
        self.schedule = LRSchedule(cfg.optim, self.peak_lr, self.stream.steps_per_task, self.stream.total_steps,
                                   restart_each_task=cfg.optim.rewarm_at_task_start)
        self.lr = self.schedule(0)
        self.grad_norm = float("nan")
        self.metrics = JsonlLog(self.run_dir / "metrics.jsonl", enabled=dist.is_main())
        self.logs: dict[str, JsonlLog] = {"metrics": self.metrics}
        extra = [cb if isinstance(cb, Callback) else cb(self) for cb in callbacks or []]
        self.callbacks = Callbacks(default_callbacks(self, quiet) + extra)
        self.wall_time_s = 0.0
        self.task: Task | None = None  # the task being trained (or just finished)

    # ------------------------------------------------------------------ counters (derived)
    @property
    def step(self) -> int:
        return self.stream.step

    @property
    def tokens(self) -> int:
        return self.stream.step * self.tokens_per_step

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        t0 = time.perf_counter()
        self.callbacks.fire("on_fit_start", self)
        while not self.stream.done:
            task = self.task = self.stream.task(self.stream.task_index)
            self.callbacks.fire("on_task_start", self, task)
            while not self.stream.done and self.stream.task_index == task.index:
                loss = self.train_step()
                self.callbacks.fire("on_step_end", self, loss)
            self.callbacks.fire("on_task_end", self, task)
            if task.is_cycle_end:
                self.callbacks.fire("on_cycle_end", self, task)
            if self.should_checkpoint(task):
                self.wall_time_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.save_checkpoint(task)
        self.wall_time_s += time.perf_counter() - t0
        self.callbacks.fire("on_fit_end", self)

    def train_step(self) -> float:
        """One optimizer step on the next global batch (with gradient accumulation)."""
        self.lr = self.schedule(self.stream.step)
        set_lr(self.optimizer, self.lr)
        x, y = self.stream.next_batch()
        loss = forward_backward(self.model, x, y, self.cfg.train.micro_batch_size, self.device, self.cfg.train.dtype)
        self.callbacks.fire("on_after_backward", self)
        self.grad_norm = clip_and_step(self.model, self.optimizer, loss, self.cfg.optim.grad_clip, self.stream.step)
        return loss

    # ------------------------------------------------------------------ logging
    def log(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write one metrics row, tagged with the loop position (task_index -1 = before training)."""
        t = self.task
        row = {"step": self.step, "tokens": self.tokens, "task_index": t.index if t else -1,
               "cycle": t.cycle if t else -1, "lang": t.lang if t else None, **metrics}
        self.metrics.append(row)
        self.callbacks.fire("on_log", self, row)
        return row

    # ------------------------------------------------------------------ checkpoints
    def should_checkpoint(self, task: Task) -> bool:
        every = self.cfg.train.checkpoint_every_tasks
        periodic = every > 0 and (task.index + 1) % every == 0
        return periodic or self.stream.done or self.callbacks.wants_checkpoint(task)

    def save_checkpoint(self, task: Task) -> Path | None:
        name = checkpoint_name(task.index)
        path = None
        if dist.is_main():
            meta = {
                "name": name,
                "step": self.step,
                "tokens": self.tokens,
                "task_index": task.index,
                "cycle": task.cycle,
                "lang": task.lang,
                "non_embedding_params": self.non_embedding_params,
                "data": data_fingerprint(self.data),
                "stream": self.stream.state_dict(),
                "callbacks": self.callbacks.state_dict(),
                "logs": {k: v.rows for k, v in self.logs.items()},
                "wall_time_s": self.wall_time_s,
                "config": to_dict(self.cfg),
                "environment": environment_info(),
            }
            path = save_checkpoint(self.run_dir, name, self.model, self.optimizer, meta)
            prune_checkpoints(self.run_dir, self.cfg.train.keep_last, self.callbacks.pinned_checkpoints())
            update_run_json(self.run_dir, status="running", step=self.step, tokens=self.tokens,
                            wall_time_s=self.wall_time_s)
        dist.barrier()
        self.callbacks.fire("on_checkpoint", self, path)
        return path

    def restore(self, path: str | Path, truncate_logs: bool = True) -> dict[str, Any]:
        """Continue from a checkpoint: weights, optimizer, RNG, stream, callbacks, and (with
        ``truncate_logs``) the run's logs rolled back to the rows they had at the checkpoint."""
        saved, now = read_json(Path(path) / "meta.json").get("data"), data_fingerprint(self.data)
        if saved is not None and saved != now:
            raise PlasticError(
                f"{path} was trained on other data than the run would now read (tokenizer or token shards "
                f"changed: {saved} vs {now}); an exact resume needs the same data: rebuild it as it was, or "
                "start a new run"
            )
        meta = load_checkpoint(path, self.model, self.optimizer)
        self.stream.load_state_dict(meta["stream"])
        self.callbacks.load_state_dict(meta["callbacks"])
        for key, log_ in self.logs.items():
            if truncate_logs:
                log_.truncate_to(meta["logs"].get(key, 0))
        self.wall_time_s = float(meta.get("wall_time_s", 0.0))
        return meta


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What a resume must find unchanged: the tokenizer and, per training language, the token shard
    (its sha256 from the data manifest where there is one, else its length)."""
    manifest = getattr(data, "manifest", None) or {}
    langs = manifest.get("languages", {})
    return {
        "tokenizer": (manifest.get("tokenizer") or {}).get("hash"),
        "train": {lang: (langs.get(lang, {}).get("train") or {}).get("sha256") or len(arr)
                  for lang, arr in sorted(data.train.items())},
    }


def forward_backward(model: torch.nn.Module, x, y, micro_batch_size: int, device: torch.device, dtype: str) -> float:
    """Accumulate the gradient of the mean loss over (x, y) in micro-batches; return the loss."""
    micro = micro_batch_size or len(x)
    total = torch.zeros((), device=device)
    for i in range(0, len(x), micro):
        xb = torch.from_numpy(x[i : i + micro]).to(device, non_blocking=True)
        yb = torch.from_numpy(y[i : i + micro]).to(device, non_blocking=True)
        with autocast_context(device, dtype):
            loss = model(xb, yb) * (len(xb) / len(x))
        loss.backward()
        total += loss.detach()
    return float(total)


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: float, grad_clip: float,
                  step: int) -> float:
    """Clip the global gradient norm, refuse non-finite values, step; return the pre-clip norm."""
    clip = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(
            f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the weights were not "
            "updated and the last good checkpoint is kept. Start a new run with a lower optim.lr or with "
            "optim.grad_clip > 0 (resuming would repeat the same steps exactly)"
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def default_callbacks(loop: Trainer, quiet: bool) -> list[Callback]:
    cbs: list[Callback] = [
        TaskBoundaryReset(loop.cfg.optim.reset_at_task_start),
        TrainMetrics(loop.cfg.train.log_every),
        Evaluator(loop),
        ProgressBar(enabled=not quiet and dist.is_main()),
    ]
    if loop.cfg.train.tensorboard and dist.is_main():
        cbs.append(TensorBoard(loop.run_dir / "logs" / "tensorboard"))
    if loop.cfg.train.wandb and dist.is_main():
        cbs.append(WandB(loop))
    return cbs


# ---------------------------------------------------------------------- run directories


def update_run_json(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    info = read_json(path) if path.exists() else {}
    info.update(fields)
    atomic_write_json(path, info)
    return info


def check_new_run_dir(run_dir: str | Path, overwrite: bool = False) -> None:
    """A new run may not land on an existing one unless ``overwrite``; only a plasticlm run directory
    (config.toml and run.json) is ever replaced."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        return
    if not overwrite:
        raise PlasticError(
            f"run directory {run_dir} already holds a run: continue it with `plasticlm resume {run_dir}`, "
            "choose another --run-dir, or pass --overwrite to start again"
        )
    if not (run_dir / "run.json").exists():
        raise PlasticError(
            f"{run_dir} has a config.toml but no run.json: it does not look like a plasticlm run directory, "
            "so --overwrite will not delete it; choose another --run-dir"
        )


def init_run_dir(run_dir: str | Path, cfg: Config, overwrite: bool = False) -> Path:
    """Create a fresh run directory with the resolved config and environment info."""
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir, overwrite)
    if (run_dir / "config.toml").exists():
        for child in run_dir.iterdir():  # all but the lock file this process holds (runlock.py)
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            elif child.name != LOCK_NAME:
                child.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    atomic_write_text(run_dir / "config.toml", dumps_toml(cfg))
    atomic_write_json(run_dir / "run.json", {"status": "created", **environment_info()})
    return run_dir


def _file_logging(run_dir: Path) -> logging.Handler:
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "logs" / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("plasticlm").addHandler(handler)
    logging.getLogger("plasticlm").setLevel(logging.INFO)
    return handler


def run_training(trainer: Trainer) -> dict[str, Any]:
    """Fit with status bookkeeping in run.json; returns a summary."""
    handler = _file_logging(trainer.run_dir)
    try:
        log.info("start at step %d of %d (%s)", trainer.step, trainer.stream.total_steps, trainer.run_dir)
        update_run_json(trainer.run_dir, status="running")
        try:
            trainer.fit()
        except NonFiniteLoss as e:
            log.error("%s", e)
            update_run_json(trainer.run_dir, status="failed", error=str(e), step=trainer.step)
            raise
        except KeyboardInterrupt:
            update_run_json(trainer.run_dir, status="interrupted", step=trainer.step)
            raise
        summary = summarize(trainer)
        update_run_json(trainer.run_dir, status="done", step=trainer.step, tokens=trainer.tokens,
                        wall_time_s=trainer.wall_time_s, summary=summary)
        log.info("done: %s", summary)
        return summary
    finally:
        logging.getLogger("plasticlm").removeHandler(handler)
        handler.close()


def summarize(trainer: Trainer) -> dict[str, Any]:
    last_val = {}
    for row in reversed(read_jsonl(trainer.metrics.path)):
        if any(k.startswith("val/") for k in row):
            last_val = {k: v for k, v in row.items() if k.startswith("val/")}
            break
    return {
        "run_dir": str(trainer.run_dir),
        "steps": trainer.step,
        "tokens": trainer.tokens,
        "non_embedding_params": trainer.non_embedding_params,
        "peak_lr": trainer.peak_lr,
        "reuse": {k: round(v, 3) for k, v in trainer.stream.reuse().items()},
        "wall_time_s": round(trainer.wall_time_s, 2),
        "final": last_val,
    }


def load_data(cfg: Config, progress: bool = True):
    """Build or load the tokens a run needs (corpus, tokenizer, shards)."""
    from plasticlm.data.prepare import prepare_data

    return prepare_data(cfg, progress=progress)


def train(cfg: Config, run_dir: str | Path, *, data: Any = None, callbacks: list[CallbackSpec] | None = None,
          quiet: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Start a new run in ``run_dir`` (nothing is written there until the model, stream and callbacks
    have been built, so a configuration that cannot run leaves no half-made run directory)."""
    check_new_run_dir(run_dir, overwrite)
    data = data if data is not None else load_data(cfg, progress=not quiet)
    trainer = Trainer(cfg, run_dir, data, callbacks=callbacks, quiet=quiet)
    with run_lock(run_dir, "train", create=True):  # a second writer is refused, naming this process
        init_run_dir(run_dir, cfg, overwrite=overwrite)
        for log_ in trainer.logs.values():  # counted before --overwrite emptied the directory
            log_.rows = len(read_jsonl(log_.path)) if log_.enabled else 0
        return run_training(trainer)


def resume(run_dir: str | Path, *, data: Any = None, callbacks: list[CallbackSpec] | None = None,
           quiet: bool = False) -> dict[str, Any]:
    """Continue a run from its latest complete checkpoint (or from the start if it has none)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise PlasticError(f"{run_dir} is not a run directory (no config.toml); start one with `plasticlm train`")
    with run_lock(run_dir, "resume"):  # a second writer is refused, naming this process
        return _resume(run_dir, data, callbacks, quiet)


def _resume(run_dir: Path, data: Any, callbacks: list[CallbackSpec] | None, quiet: bool) -> dict[str, Any]:
    cfg = load_config(run_dir / "config.toml")
    data = data if data is not None else load_data(cfg, progress=not quiet)
    trainer = Trainer(cfg, run_dir, data, callbacks=callbacks, quiet=quiet)
    ckpt = latest_valid_checkpoint(run_dir)  # a damaged latest: the one before it, with a warning
    if ckpt is not None:
        finished = read_json(ckpt / "meta.json")["stream"]["step"] >= trainer.stream.total_steps
        trainer.restore(ckpt, truncate_logs=not finished)  # a finished run's logs stay as they are
        if finished:  # killed after its last checkpoint: finish its bookkeeping (pruning, run.json)
            prune_checkpoints(run_dir, cfg.train.keep_last, trainer.callbacks.pinned_checkpoints())
            summary = summarize(trainer)
            update_run_json(run_dir, status="done", step=trainer.step, tokens=trainer.tokens,
                            wall_time_s=trainer.wall_time_s, summary=summary)
            return summary
    else:
        for log_ in trainer.logs.values():
            log_.truncate_to(0)
    return run_training(trainer)
