"""The training loop: one model on the continual (or stationary, or permuted) language stream.

The loop reads top to bottom (``Trainer.fit``, ``Trainer.train_step``). Everything else a run does
(task-boundary resets, mitigations, metrics, evaluation, probes, progress, trackers) is a component
built from ``train.components`` (components/) and fired at fixed hooks.
Everything needed to continue is state: model, optimizer, stream position and RNG, torch RNG, loop
counters (derived from the stream), component states and random streams, and the row counts of the
run's JSONL logs. A resumed run therefore ends with the same weights, bit for bit on CPU, as an
uninterrupted one. The run directory's layout is in rundir.py.

Under torchrun the same loop runs on every rank (dist.py): the trainer keeps the raw model (what
checkpoints, components and probes see) and the wrapped one (DDP, or the model sharded by FSDP2) that
training steps call; rank 0 alone takes the run lock and writes the run's files.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from plasticlm import dist, dist_checkpoint
from plasticlm.checkpoint import (
    checkpoint_name,
    checkpoints_dir,
    latest_valid_checkpoint,
    load_checkpoint,
    load_component_states,
    prune_checkpoints,
    save_checkpoint,
)
from plasticlm.components import Component, Components, LoopView, build_components
from plasticlm.components.mitigations import run_config
from plasticlm.config import Config, load_config, to_dict
from plasticlm.cpu import configure_cpu
from plasticlm.data.needs import check_reuse, format_reuse
from plasticlm.data.prepare import prepare_data_ranked
from plasticlm.data.stream import LanguageStream, Task
from plasticlm.errors import NonFiniteLoss, PlasticError
from plasticlm.hf import load_gpt2_into
from plasticlm.model import GPT, build_gpt_config, non_embedding_params
from plasticlm.optim import LRSchedule, build_optimizer, peak_lr, set_lr
from plasticlm.rundir import check_new_run_dir, data_fingerprint, file_logging, init_run_dir, update_run_json
from plasticlm.runlock import main_lock
from plasticlm.runlog import JsonlLog, environment_info, read_json, read_jsonl
from plasticlm.step import (
    check_finite,
    clip_gradients,
    compile_for_training,
    forward_backward,
    optimizer_step,
    resolve_device,
)

log = logging.getLogger("plasticlm.train")


class Trainer:
    """One training run. Build it, optionally ``restore()``, then ``fit()``."""

    def __init__(self, cfg: Config, run_dir: str | Path, data: Any, components: list[Component] | None = None,
                 quiet: bool = False):
        """``components`` are added after those of ``train.components`` (tests, scripts)."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.data = data
        self.quiet = quiet
        configure_cpu(cfg.train.threads, cfg.train.malloc)
        self.device = resolve_device(cfg.train.device)
        dist.init_from_env(cfg.dist, self.device)  # under torchrun: join the group (dist.py)
        dist.check_strategy(cfg.dist)
        check_rank_batch(cfg, dist.world_size())
        self.is_main = dist.is_main()
        torch.manual_seed(cfg.train.seed)
        self.gpt_config = build_gpt_config(cfg.model, data.vocab_size)
        self.model = GPT(self.gpt_config).to(self.device)
        if cfg.model.init_from:  # a transformers GPT-2 checkpoint instead of a fresh init (consumes no RNG)
            load_gpt2_into(self.model, cfg.model.init_from)
        self.model.train()  # the raw model: checkpoints, components, probes
        self.wrapped = dist.parallelize(self.model, cfg.dist, self.device)  # DDP or FSDP2, or the model itself
        self.strategy = dist.active_strategy(cfg.dist)
        # what training steps call: the wrapped model, compiled when train.compile resolves to on
        self.step_model = compile_for_training(self.wrapped, self.device, cfg.train.compile)
        self.non_embedding_params = non_embedding_params(self.gpt_config)
        # the stream and the LR schedule with the settings a mitigation needs (replay); the probe keeps cfg's
        stream_cfg = run_config(cfg)
        self.stream = LanguageStream(stream_cfg.stream, data.train, cfg.model.seq_len, cfg.train.batch_size,
                                     self.gpt_config.vocab_size, rank=dist.rank(), world_size=dist.world_size())
        self.reuse_factors = check_reuse(stream_cfg, {lang: len(arr) for lang, arr in data.train.items()}, "train")
        if max(self.reuse_factors.values(), default=0.0) > 1.0 and not quiet and dist.is_main():
            print(f"plasticlm: data reuse (stream.allow_reuse = true), a language's training tokens read x times: "
                  f"{format_reuse(self.reuse_factors)}", file=sys.stderr)
        self.tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
        self.peak_lr = peak_lr(cfg.optim, self.non_embedding_params)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.peak_lr)
        self.schedule = LRSchedule(stream_cfg.optim, self.peak_lr, self.stream.steps_per_task,
                                   self.stream.total_steps, restart_each_task=stream_cfg.optim.rewarm_at_task_start)
        self.lr = self.schedule(0)
        self.grad_norm = float("nan")
        self.metrics = JsonlLog(self.run_dir / "metrics.jsonl", enabled=self.is_main)
        self.logs: dict[str, JsonlLog] = {"metrics": self.metrics}  # components add theirs (LoopView.open_log)
        self.task: Task | None = None  # the task being trained (or just finished)
        extra = [(c, LoopView(self, c.name)) for c in components or []]
        self.components = Components(build_components(self, cfg) + extra)
        self.wall_time_s = 0.0

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
        self.components.fire("on_fit_start")
        while not self.stream.done:
            task = self.task = self.stream.task(self.stream.task_index)
            self.components.fire("on_task_start", task)
            while not self.stream.done and self.stream.task_index == task.index:
                loss = self.train_step()
                self.components.fire("on_step_end", loss)
            self.components.fire("on_task_end", task)
            if task.is_cycle_end:
                self.components.fire("on_cycle_end", task)
            if self.should_checkpoint(task):
                self.wall_time_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.save_checkpoint(task)
        self.wall_time_s += time.perf_counter() - t0
        self.components.fire("on_fit_end")

    def train_step(self) -> float:
        """One optimizer step on the next global batch (with gradient accumulation)."""
        self.lr = self.schedule(self.stream.step)
        set_lr(self.optimizer, self.lr)
        x, y = self.stream.next_batch()
        self.components.fire("on_step_start", (x, y))
        loss = forward_backward(self.step_model, x, y, self.cfg.train.micro_batch_size, self.device,
                                self.cfg.train.dtype)  # this rank's rows of the global batch
        loss = dist.mean_across_ranks(loss)  # non-finite on every rank if on any: all stop at this step
        self.components.fire("on_after_backward")
        self.grad_norm = clip_gradients(self.model, self.cfg.optim.grad_clip)
        check_finite(loss, self.grad_norm, self.stream.step, self.optimizer)
        self.components.fire("pre_optim_step")
        optimizer_step(self.optimizer)
        return loss

    def full_model(self) -> torch.nn.Module:
        """The raw model with full weights on this device (what probes copy): the model itself, or
        under FSDP a gathered copy (collective: every rank calls it at the same point)."""
        return dist.full_model(self.model, lambda: GPT(self.gpt_config), self.device, dist_checkpoint.full_state)

    # ------------------------------------------------------------------ logging
    def log(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write one metrics row, tagged with the loop position (task_index -1 = before training)."""
        t = self.task
        row = {"step": self.step, "tokens": self.tokens, "task_index": t.index if t else -1,
               "cycle": t.cycle if t else -1, "lang": t.lang if t else None, **metrics}
        self.metrics.append(row)
        self.components.fire("on_log", row)
        return row

    # ------------------------------------------------------------------ checkpoints
    def should_checkpoint(self, task: Task) -> bool:
        every = self.cfg.train.checkpoint_every_tasks
        periodic = every > 0 and (task.index + 1) % every == 0
        return periodic or self.stream.done or self.components.wants_checkpoint(task)

    def save_checkpoint(self, task: Task) -> Path | None:
        name = checkpoint_name(task.index)
        path = None
        rng = dist_checkpoint.gathered_rng(self.device)  # every rank's RNG (collective)
        sharded = dist.is_sharded(self.model)
        write_state = (dist_checkpoint.stage_sharded(checkpoints_dir(self.run_dir), name, self.model, self.optimizer)
                       if sharded else None)  # collective: every rank writes its shards
        if self.is_main:
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
                "component_random": self.components.random_state(),
                "logs": {k: v.rows for k, v in self.logs.items()},
                "wall_time_s": self.wall_time_s,
                "config": to_dict(self.cfg),
                "environment": environment_info(),
                "dist": {"strategy": self.strategy, "world_size": dist.world_size(),
                         "format": "sharded" if sharded else "full"},
            }
            path = save_checkpoint(self.run_dir, name, self.model, self.optimizer, meta,
                                   components=self.components.state_dict(), write_state=write_state, rng=rng)
            prune_checkpoints(self.run_dir, self.cfg.train.keep_last, self.components.pinned_checkpoints())
            self.update_run_json(status="running", step=self.step, tokens=self.tokens, wall_time_s=self.wall_time_s)
        dist.barrier()
        path = path or checkpoints_dir(self.run_dir) / name  # the same checkpoint, on every rank
        self.components.fire("on_checkpoint", path)
        return path

    def restore(self, path: str | Path, truncate_logs: bool = True) -> dict[str, Any]:
        """Continue from a checkpoint: weights, optimizer, RNG, stream, components, and (with
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
        self.components.load_state_dict(load_component_states(path, meta), meta.get("component_random"))
        for key, log_ in self.logs.items():
            if truncate_logs:
                log_.truncate_to(meta["logs"].get(key, 0))
        self.wall_time_s = float(meta.get("wall_time_s", 0.0))
        return meta

    def update_run_json(self, **fields: Any) -> dict[str, Any]:
        return update_run_json(self.run_dir, **fields)


def check_rank_batch(cfg: Config, world: int) -> None:
    """Each rank trains ``batch_size / world`` rows of the global batch in micro-batches of
    ``micro_batch_size``."""
    b, mb = cfg.train.batch_size, cfg.train.micro_batch_size
    if b % world:
        raise PlasticError(f"train.batch_size = {b} is not divisible by the {world} processes: choose a batch "
                           "size that is a multiple of the number of processes (the global batch is split)")
    if mb and (b // world) % mb:
        raise PlasticError(f"train.micro_batch_size = {mb} must divide the per-process batch {b // world} "
                           f"(train.batch_size {b} / {world} processes): lower it or set 0 (no accumulation)")


def run_training(trainer: Trainer) -> dict[str, Any]:
    """Fit with status bookkeeping in run.json; returns a summary."""
    with file_logging(trainer.run_dir):
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


def train(cfg: Config, run_dir: str | Path, *, data: Any = None, components: list[Component] | None = None,
          quiet: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Start a new run in ``run_dir`` (nothing is written there until the model, stream and components
    have been built, so a configuration that cannot run leaves no half-made run directory)."""
    check_new_run_dir(run_dir, overwrite)
    data = data if data is not None else load_data(cfg, progress=not quiet)
    trainer = Trainer(cfg, run_dir, data, components=components, quiet=quiet)
    with main_lock(run_dir, "train", create=True):  # a second writer is refused, naming this process
        if trainer.is_main:
            init_run_dir(run_dir, cfg, overwrite=overwrite)
        dist.barrier()
        for log_ in trainer.logs.values():  # counted before --overwrite emptied the directory
            log_.rows = len(read_jsonl(log_.path)) if log_.enabled else 0
        return run_training(trainer)


def load_data(cfg: Config, progress: bool = True) -> Any:
    """Build or load the tokens a run needs. Under torchrun rank 0 builds what is missing while the
    others wait, then they read the cache."""
    dist.init_from_env(cfg.dist, resolve_device(cfg.train.device))
    return prepare_data_ranked(cfg, progress=progress)


def train_or_resume(run_dir: Path, cfg: Config, quiet: bool, data: Any = None) -> dict[str, Any]:
    """Train, or resume when the run directory already holds the run (a sweep's or a cluster job's
    run). A run stopped by a non-finite loss is reported (status "failed" in its run.json) and does
    not stop the other runs."""
    try:
        if (run_dir / "config.toml").exists():
            return resume(run_dir, quiet=quiet, data=data)
        return train(cfg, run_dir, quiet=quiet, data=data)
    except NonFiniteLoss as e:
        print(f"[sweep] {run_dir.name} failed: {e}", file=sys.stderr)
        return {"run_dir": str(run_dir), "error": str(e)}


def resume(run_dir: str | Path, *, data: Any = None, components: list[Component] | None = None,
           quiet: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """Continue a run from its latest complete checkpoint (or from the start if it has none).

    ``overrides`` may change only how the run is executed (``dist.*``: e.g. continue a one-process
    run on several ranks under FSDP), never what it computes; config.toml is left as it was."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise PlasticError(f"{run_dir} is not a run directory (no config.toml); start one with `plasticlm train`")
    bad = [o for o in overrides or [] if not o.strip().startswith("dist.")]
    if bad:
        raise PlasticError(f"resume --set accepts dist.* keys only (how the run is executed), got {bad}: "
                           "a resumed run continues the configuration it started with; start a new run instead")
    cfg = load_config(run_dir / "config.toml", overrides or [])
    dist.init_from_env(cfg.dist, resolve_device(cfg.train.device))  # the group first: rank 0 takes the lock
    data = data if data is not None else load_data(cfg, progress=not quiet)
    with main_lock(run_dir, "resume"):  # a second writer is refused, naming this process
        return _resume(run_dir, cfg, data, components, quiet)


def _resume(run_dir: Path, cfg: Config, data: Any, components: list[Component] | None,
            quiet: bool) -> dict[str, Any]:
    trainer = Trainer(cfg, run_dir, data, components=components, quiet=quiet)
    ckpt = latest_valid_checkpoint(run_dir)  # a damaged latest: the one before it, with a warning
    if ckpt is not None:
        finished = read_json(ckpt / "meta.json")["stream"]["step"] >= trainer.stream.total_steps
        trainer.restore(ckpt, truncate_logs=not finished)  # a finished run's logs stay as they are
        if finished:  # killed after its last checkpoint: finish its bookkeeping (pruning, run.json)
            prune_checkpoints(run_dir, cfg.train.keep_last, trainer.components.pinned_checkpoints())
            summary = summarize(trainer)
            update_run_json(run_dir, status="done", step=trainer.step, tokens=trainer.tokens,
                            wall_time_s=trainer.wall_time_s, summary=summary)
            return summary
    else:
        for log_ in trainer.logs.values():
            log_.truncate_to(0)
    return run_training(trainer)
