"""Plasticity probes (arXiv:2606.24752, "Probe"): how fast a copy of the model learns a new language.

At a probe point a *copy* of the model is trained on the held-out probe language (default vi)
with a fresh optimizer and the training recipe (same peak LR, warm-up fraction, batch), for
``probe.steps`` steps. Validation loss on fixed held-out sequences of the probe language is
measured at probe step 0, every ``probe.eval_every`` steps and at the last step. The copy is then
discarded; the run continues from the un-probed weights (probing runs under a forked RNG, so the
training trajectory is bit-identical with probes on or off).

Every probe of a run uses the same probe training tokens and the same validation sequences, so
probe points are comparable. With ``probe.replicates = K`` (the project's addition) each probe
point is probed K times, replicate r training on the window of the probe language's training
split that starts at token round(r * n / K) (n = its length; wrapping around), so the windows are
spread over the data; replicate 0 starts at the split's start, the single window of K = 1. The
AUC of a probe point is the mean of its K AUCs (equal to the AUC of the mean curve: AUC is linear),
and their spread measures how much a probe score moves for reasons other than the checkpoint: the
probe's own noise, reported beside the signal (``analysis.probe_noise``). For the permuted stream,
the probe task is the base language under a held-out permutation.

Score: AUC = mean validation loss over the probe (``onset.auc``: trapezoidal area under loss vs
probe step divided by the probe length). The scratch baseline is the same probe from a fresh
initialisation of the same size and seed; it is computed once and cached under
``$PLASTICLM_HOME/scratch``.

Files: ``RUN_DIR/probes.jsonl`` (one row per probe) and ``RUN_DIR/probes/<checkpoint>.npz``
(per-sequence losses, shape (n_eval, n_sequences), for the bootstrap CI of the onset). In
probes.jsonl ``task_index`` counts the task instances trained before the probe (the paper's unit
for the onset), so the probe after the first task has task_index 1.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import io
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plasticlm import dist
from plasticlm.checkpoint import checkpoints_dir, list_checkpoints, load_checkpoint
from plasticlm.config import Config, StreamConfig, load_config
from plasticlm.cpu import configure_cpu
from plasticlm.data.paths import home_dir
from plasticlm.data.prepare import prepare_data, prepare_data_ranked
from plasticlm.data.stream import LanguageStream, Task, task_count
from plasticlm.errors import DataError, NonFiniteLoss, PlasticError
from plasticlm.evaluate import fixed_windows, sequence_losses
from plasticlm.model import GPT, GPTConfig, build_gpt_config, non_embedding_params
from plasticlm.onset import auc as probe_auc
from plasticlm.onset import dauc
from plasticlm.optim import LRSchedule, build_optimizer, peak_lr, set_lr
from plasticlm.progress import progress_bar
from plasticlm.rundir import update_run_json
from plasticlm.runlock import main_lock, run_lock
from plasticlm.runlog import JsonlLog, atomic_write_bytes, atomic_write_json, read_json, read_jsonl
from plasticlm.step import clip_and_step, forward_backward, resolve_device

# ---------------------------------------------------------------------------- schedule


def probe_task_indices(cfg: Config, num_tasks: int, tasks_per_cycle: int, tokens_per_task: int) -> list[int]:
    """0-based indices of the tasks after which a probe runs (one rule for runs and `plasticlm plan`).

    The union of (each counted once): every cycle end (``probe.at_cycle_end``); every task of a language
    in ``probe.after_languages`` (arXiv:2606.24752, "Probe": zh, de, ru; ru ends the cycle); and, with
    ``probe.every_tokens > 0`` (the paper's stationary control: every 5B tokens), each task during which
    the token count reached a multiple of ``every_tokens`` (probes happen at task boundaries, where
    checkpoints are). A stationary run, whose "tasks" are equal token segments, is probed at the same
    token counts as its continual twin (the same task positions). The config rejects after_languages
    on a permuted stream and languages that are not trained (never silently ignored).
    """
    p = cfg.probe
    slots = set()
    if cfg.stream.kind != "permuted":
        slots = {i for i, lang in enumerate(cfg.stream.languages[:tasks_per_cycle]) if lang in p.after_languages}
    if p.at_cycle_end:
        slots.add(tasks_per_cycle - 1)
    every = p.every_tokens
    return [k for k in range(num_tasks) if k % tasks_per_cycle in slots
            or (every > 0 and ((k + 1) * tokens_per_task) // every > (k * tokens_per_task) // every)]


def probe_eval_steps(probe_cfg) -> list[int]:
    """Probe steps at which validation loss is measured: 0, every ``eval_every``, and the last step."""
    return sorted(set(range(0, probe_cfg.steps + 1, probe_cfg.eval_every)) | {probe_cfg.steps})


# ---------------------------------------------------------------------------- the probe


@dataclass
class ProbeSetup:
    """What all probes of a run share: recipe, probe training tokens, fixed validation windows."""

    cfg: Config
    gpt_config: GPTConfig
    lr: float
    lang: str
    train_tokens: np.ndarray
    val_windows: np.ndarray  # (n_seq, T + 1), already permuted for the permuted stream
    permutation: np.ndarray | None
    device: torch.device

    @classmethod
    def build(cls, cfg: Config, data: Any, gpt_config: GPTConfig, lr: float, device: torch.device,
              permutation: np.ndarray | None = None) -> ProbeSetup:
        lang = cfg.stream.permuted_base if permutation is not None else cfg.probe.language
        if lang not in data.train or lang not in data.val:
            raise DataError(f"no tokens for the probe language {lang!r}: build the corpus with it")
        windows = fixed_windows(data.val[lang], cfg.probe.sequences, cfg.model.seq_len)
        if permutation is not None:
            windows = permutation[windows]
        offset = cfg.probe.train_offset_tokens  # the same window for every probe of the run
        return cls(cfg, gpt_config, lr, lang, data.train[lang][offset:], windows, permutation, device)

    @property
    def eval_steps(self) -> list[int]:
        return probe_eval_steps(self.cfg.probe)

    @property
    def tokens(self) -> int:
        return self.cfg.probe.steps * self.cfg.train.batch_size * self.cfg.model.seq_len

    def key(self, seed: int) -> str:
        """Content hash of everything that determines a scratch probe (size, recipe, data, seed)."""
        h = hashlib.sha256()
        c = self.cfg
        o = c.optim  # only what a probe uses: its LR is the resolved self.lr, it resets nothing
        recipe = [o.beta1, o.beta2, o.eps, o.weight_decay, o.warmup_frac, o.schedule, o.min_lr_frac, o.grad_clip,
                  o.decay_embeddings]
        spec = {"gpt": self.gpt_config.__dict__, "lr": self.lr, "recipe": recipe,
                "probe": [c.probe.steps, c.probe.eval_every, c.probe.sequences, c.probe.replicates],
                "batch": [c.train.batch_size, c.train.micro_batch_size or c.train.batch_size, c.train.dtype,
                          c.eval.batch_size], "seed": seed, "device": self.device.type, "lang": self.lang,
                "code": [version("plasticlm"), torch.__version__]}
        h.update(json.dumps(spec, sort_keys=True, default=str).encode())
        h.update(self.val_windows.tobytes())
        h.update(hashlib.sha256(np.ascontiguousarray(self.train_tokens)).digest())
        if self.permutation is not None:
            h.update(self.permutation.tobytes())
        return h.hexdigest()[:20]


@dataclass
class ProbeResult:
    auc: float | None  # None when the probe diverged
    final_loss: float | None
    eval_steps: list[int]  # the eval steps reached
    curve: list[float]  # mean validation loss at each eval step
    per_sequence: np.ndarray  # (n_eval, n_seq)
    seconds: float
    tokens: int
    diverged: str | None = None  # why the probe stopped early (a non-finite loss), else None
    replicate_aucs: list[float] | None = None  # the AUC of each replicate (probe.replicates > 1)

    def npz_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, per_sequence=self.per_sequence.astype(np.float32),
                            eval_steps=np.asarray(self.eval_steps))
        return buf.getvalue()


def replicate_offset(replicate: int, replicates: int, n_tokens: int) -> int:
    """First training token of probe replicate r of K: round(r * n / K), spread over the split."""
    return int(round(replicate * n_tokens / replicates)) % max(n_tokens, 1)


def run_probe(model: torch.nn.Module, setup: ProbeSetup) -> ProbeResult:
    """Probe ``model`` ``probe.replicates`` times and average; the model and all RNG states are untouched.

    The AUC is the mean of the replicates' AUCs and ``per_sequence`` their mean losses; a replicate
    that diverges makes the probe point diverged."""
    t0 = time.perf_counter()
    k = setup.cfg.probe.replicates
    results = []
    for r in range(k):
        res = _probe_once(model, setup, replicate_offset(r, k, len(setup.train_tokens)))
        results.append(res)
        if res.diverged:
            res.diverged = f"replicate {r}: {res.diverged}" if k > 1 else res.diverged
            res.seconds = time.perf_counter() - t0
            return res
    if k == 1:
        return results[0]
    losses = np.mean([res.per_sequence for res in results], axis=0)
    curve = losses.mean(axis=1)
    aucs = [res.auc for res in results]
    return ProbeResult(
        auc=float(np.mean(aucs)), final_loss=float(curve[-1]), eval_steps=results[0].eval_steps,
        curve=curve.tolist(), per_sequence=losses, seconds=time.perf_counter() - t0, tokens=setup.tokens * k,
        replicate_aucs=[float(a) for a in aucs],
    )


def _probe_once(model: torch.nn.Module, setup: ProbeSetup, offset: int) -> ProbeResult:
    """Train a copy of ``model`` on the probe language from training token ``offset``."""
    cfg = setup.cfg
    t0 = time.perf_counter()
    devices = [setup.device.index or 0] if setup.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        probe_model = copy.deepcopy(model)
        probe_model.train()
        optimizer = build_optimizer(probe_model, cfg.optim, setup.lr)
        steps, B, T = cfg.probe.steps, cfg.train.batch_size, cfg.model.seq_len
        stream = LanguageStream(
            StreamConfig(kind="continual", languages=[setup.lang], tokens_per_task=steps * B * T, cycles=1),
            {setup.lang: setup.train_tokens}, T, B, setup.gpt_config.vocab_size,
        )
        stream.cursor[setup.lang] = offset
        schedule = LRSchedule(cfg.optim, setup.lr, steps, steps)
        eval_at = set(setup.eval_steps)
        per_seq = []
        diverged = None
        for step in range(steps + 1):
            if step in eval_at:
                per_seq.append(sequence_losses(probe_model, setup.val_windows, cfg.eval.batch_size, setup.device,
                                               cfg.train.dtype))
            if step == steps:
                break
            set_lr(optimizer, schedule(step))
            x, y = stream.next_batch()
            if setup.permutation is not None:
                x, y = setup.permutation[x], setup.permutation[y]
            loss = forward_backward(probe_model, x, y, cfg.train.micro_batch_size, setup.device, cfg.train.dtype)
            try:
                clip_and_step(probe_model, optimizer, loss, cfg.optim.grad_clip, step)
            except NonFiniteLoss as e:  # the copy diverged: record it, never fail the training run
                diverged = f"probe step {step}: {e}".split("; the weights")[0]
                break
        del probe_model, optimizer
    losses = np.stack(per_seq)  # (n_eval reached, n_seq)
    curve = losses.mean(axis=1)
    reached = setup.eval_steps[: len(per_seq)]
    return ProbeResult(
        auc=None if diverged else float(probe_auc(reached, curve)),
        final_loss=None if diverged else float(curve[-1]), eval_steps=reached, curve=curve.tolist(),
        per_sequence=losses, seconds=time.perf_counter() - t0, tokens=setup.tokens, diverged=diverged,
    )


# ---------------------------------------------------------------------------- scratch baseline


def scratch_baseline(setup: ProbeSetup, seed: int, cache_dir: Path | None = None) -> dict[str, Any]:
    """The probe from a fresh initialisation of the same size and seed (cached by content)."""
    cache_dir = Path(cache_dir or home_dir(setup.cfg.data.home) / "scratch")
    key = setup.key(seed)
    path = cache_dir / f"{key}.json"
    if path.exists():
        return read_json(path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel probe workers and twin runs compute it once
        if path.exists():
            return read_json(path)
        return _compute_scratch(setup, seed, cache_dir, key)


def _compute_scratch(setup: ProbeSetup, seed: int, cache_dir: Path, key: str) -> dict[str, Any]:
    path = cache_dir / f"{key}.json"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same initialisation as the training run of this seed
        model = GPT(setup.gpt_config).to(setup.device)
    result = run_probe(model, setup)
    atomic_write_bytes(cache_dir / f"{key}.npz", result.npz_bytes())
    doc = {"key": key, "seed": seed, "auc": result.auc, "final_loss": result.final_loss,
           "replicate_aucs": result.replicate_aucs,
           "eval_steps": result.eval_steps, "curve": result.curve, "seconds": result.seconds,
           "npz": f"{key}.npz", "diverged": result.diverged}
    atomic_write_json(path, doc)
    return doc


# ---------------------------------------------------------------------------- rows


def probe_row(name: str, task: Task, tokens_seen: int, result: ProbeResult, scratch: dict | None) -> dict[str, Any]:
    scratch_auc = scratch["auc"] if scratch else None
    return {
        "checkpoint": name,
        "task_index": task.index + 1,  # task instances trained before the probe
        "cycle": task.cycle,
        "lang": task.lang,
        "tokens_seen": tokens_seen,
        "auc": result.auc,
        "final_loss": result.final_loss,
        "curve": [[s, v] for s, v in zip(result.eval_steps, result.curve)],
        "scratch_auc": scratch_auc,
        "dauc_scratch": dauc(result.auc, scratch_auc) if scratch_auc else None,
        "probe_tokens": result.tokens,
        "seconds": round(result.seconds, 3),
        "per_sequence": f"probes/{name}.npz",
        "diverged": result.diverged,
        "replicate_aucs": result.replicate_aucs,
    }


# ---------------------------------------------------------------------------- post-hoc probing


def _checkpoint_task(meta: dict[str, Any]) -> Task:
    return Task(meta["task_index"], meta["cycle"], -1, meta["lang"], True, False)


def probe_checkpoint(run_dir: str | Path, name: str, data: Any = None, threads: int = 0) -> dict[str, Any]:
    """Probe one saved checkpoint of a run; write its npz and return its probes.jsonl row."""
    run_dir = Path(run_dir)
    configure_cpu(threads)
    cfg = load_config(run_dir / "config.toml")
    data = data if data is not None else prepare_data(cfg, progress=False)
    gpt_config = build_gpt_config(cfg.model, data.vocab_size)
    device = resolve_device(cfg.train.device)
    model = GPT(gpt_config).to(device)
    meta = load_checkpoint(checkpoints_dir(run_dir) / name, model, restore_rng=False)
    perm = None
    if cfg.stream.kind == "permuted":
        perm = LanguageStream(cfg.stream, data.train, cfg.model.seq_len, cfg.train.batch_size,
                              gpt_config.vocab_size).probe_permutation()
    setup = ProbeSetup.build(cfg, data, gpt_config, peak_lr(cfg.optim, non_embedding_params(gpt_config)), device, perm)
    scratch = scratch_baseline(setup, cfg.train.seed) if cfg.probe.scratch_baseline else None
    if scratch is not None:
        update_run_json(run_dir, scratch=scratch)
    result = run_probe(model, setup)
    atomic_write_bytes(run_dir / "probes" / f"{name}.npz", result.npz_bytes())
    return probe_row(name, _checkpoint_task(meta), meta["tokens"], result, scratch)


def _worker(args: tuple[str, str, int]) -> dict[str, Any]:
    run_dir, name, threads = args
    return probe_checkpoint(run_dir, name, threads=threads)


def pending_checkpoints(run_dir: str | Path, checkpoint: str | None = None, log: str = "probes.jsonl") -> list[str]:
    """Checkpoints at the run's probe points (or the one named) that have no row yet in ``log``
    (probes.jsonl; `plasticlm diagnose` passes diagnostics.jsonl)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise PlasticError(f"{run_dir} is not a run directory (no config.toml)")
    saved = {}
    for p in list_checkpoints(run_dir):
        try:
            saved[p.name] = read_json(p / "meta.json")
        except FileNotFoundError:  # pruned by a training run between listing and reading
            continue
        except ValueError as e:
            raise PlasticError(f"{p / 'meta.json'} is damaged ({e}); restore it or delete {p}") from None
    if checkpoint is not None:
        name = f"task-{int(checkpoint):06d}" if checkpoint.isdigit() else checkpoint
        if name not in saved:
            known = ", ".join(sorted(saved)) or "none"
            raise PlasticError(f"{run_dir}: no checkpoint {checkpoint!r} (give a name or a 0-based task index); "
                               f"saved: {known}")
        wanted = [name]
    elif saved:
        cfg = load_config(run_dir / "config.toml")
        n_lang = len(cfg.stream.languages)
        any_meta = next(iter(saved.values()))
        tokens_per_task = any_meta["tokens"] // (any_meta["task_index"] + 1)
        points = probe_task_indices(cfg, task_count(cfg.stream), n_lang, tokens_per_task)
        wanted = [n for n, m in saved.items() if m["task_index"] in points]
    else:
        wanted = []
    done = {r["checkpoint"] for r in read_jsonl(run_dir / log)}
    return [n for n in sorted(wanted) if n not in done]


def probe_run_dir(run_dir: str | Path, workers: int = 1, checkpoint: str | None = None, data: Any = None,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Probe a run's saved checkpoints post hoc, in parallel worker processes; skip those already probed.

    Torch threads are divided between workers (at least 1 each). Rows are appended to probes.jsonl
    as probes finish (under a file lock, so array jobs probing one checkpoint each can share a run).
    Under torchrun (``WORLD_SIZE`` > 1) the ranks split the checkpoints instead of worker processes.
    """
    if dist.env_world_size() > 1:
        return _probe_across_ranks(Path(run_dir), checkpoint, data)
    with run_lock(run_dir, "probe", shared=checkpoint is not None):  # whole runs exclusive, checkpoints shared
        return _probe_run_dir(run_dir, workers, checkpoint, data, progress)


def _probe_run_dir(run_dir: str | Path, workers: int, checkpoint: str | None, data: Any,
                   progress: bool) -> list[dict[str, Any]]:
    todo = pending_checkpoints(run_dir, checkpoint)
    log = JsonlLog(Path(run_dir) / "probes.jsonl")
    if not todo:
        return []
    rows = []
    bar = None
    if progress:
        bar = progress_bar(total=len(todo), unit="probe", desc=f"probing {Path(run_dir).name}")
    if workers <= 1 or len(todo) == 1:
        for name in todo:
            row = probe_checkpoint(run_dir, name, data=data)
            log.append(row, unique_key="checkpoint")  # one row per checkpoint
            rows.append(row)
            if bar:
                bar.update(1)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with mp.get_context("spawn").Pool(workers) as pool:
            for row in pool.imap_unordered(_worker, [(str(run_dir), n, threads) for n in todo]):
                log.append(row, unique_key="checkpoint")  # one row per checkpoint
                rows.append(row)
                if bar:
                    bar.update(1)
    if bar:
        bar.close()
    return sorted(rows, key=lambda r: r["task_index"])


def _probe_across_ranks(run_dir: Path, checkpoint: str | None, data: Any) -> list[dict[str, Any]]:
    """``probe_run_dir`` under torchrun: rank r probes pending checkpoints r, r + W, ... (each writes its
    probes' npz files); rank 0 holds the run lock and appends every row to probes.jsonl. Returns all
    rows on every rank. Any checkpoint format loads into each rank's own plain model."""
    cfg = load_config(run_dir / "config.toml")
    dist.init_from_env(cfg.dist, resolve_device(cfg.train.device))
    with main_lock(run_dir, "probe", shared=checkpoint is not None):
        todo = pending_checkpoints(run_dir, checkpoint)
        data = data if data is not None else prepare_data_ranked(cfg, progress=False)
        mine = [probe_checkpoint(run_dir, name, data=data) for name in todo[dist.rank() :: dist.world_size()]]
        rows = sorted((r for part in dist.all_gather_objects(mine) for r in part), key=lambda r: r["task_index"])
        log = JsonlLog(run_dir / "probes.jsonl", enabled=dist.is_main())
        for row in rows:
            log.append(row, unique_key="checkpoint")
        dist.barrier()
    return rows
