"""Wall time of a study on this machine's CPU, from a short measured benchmark of each preset.

``plan.plan_study`` counts tokens and FLOPs from the config alone; on a CPU, FLOPs say little
about time (the output layer, memory traffic and Python overhead dominate micro models), so this
module times the real training step (``step.forward_backward`` + ``step.clip_and_step``: the
step that training and probes run) and the evaluation forward pass (``evaluate.sequence_losses``)
of every preset at the study's batch size and sequence length, with the threads each run will get
(``os.cpu_count() // parallel``), and converts the plan's counts into seconds:
    train_s = steps * t_step
    probe_s = (probes + scratch probes) * probe.steps * probe.replicates * t_step
    eval_s  = eval tokens / eval tokens-per-second    (probe validation + training validation)

Runs are then packed onto ``parallel`` workers largest first (the sweep's order), and the wall
time is the busiest worker's total. Timing noise and other load on the machine move the numbers:
it is an estimate to size a study, printed with the measured rates so it can be checked.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from plasticlm.config import Config
from plasticlm.cpu import configure_cpu
from plasticlm.evaluate import sequence_losses
from plasticlm.model import GPT, build_gpt_config
from plasticlm.optim import build_optimizer
from plasticlm.plan import StudyPlan
from plasticlm.step import clip_and_step, forward_backward


@dataclass(frozen=True)
class PresetRate:
    """Measured speed of one preset on this machine."""

    preset: str
    threads: int
    step_s: float
    """Seconds per optimizer step of batch_size x seq_len tokens (forward, backward, clip, AdamW)."""
    eval_tokens_per_s: float


def measure_preset(cfg: Config, preset: str, threads: int, steps: int = 6, warmup: int = 2) -> PresetRate:
    """Time ``steps`` real training steps (after ``warmup``) and one evaluation pass of ``preset``."""

    configure_cpu(threads)
    gpt = build_gpt_config(dataclasses.replace(cfg.model, preset=preset, depth=0), cfg.data.vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT(gpt)
    optimizer = build_optimizer(model, cfg.optim, 1e-3)
    rng = np.random.default_rng(0)
    b, t = cfg.train.batch_size, cfg.model.seq_len
    x = rng.integers(0, gpt.vocab_size, size=(b, t + 1))
    device = torch.device("cpu")
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = forward_backward(model, x[:, :-1], x[:, 1:], cfg.train.micro_batch_size, device, cfg.train.dtype)
        clip_and_step(model, optimizer, loss, cfg.optim.grad_clip, i)
    step_s = (time.perf_counter() - t0) / steps
    windows = x[: max(1, min(b, cfg.eval.batch_size))]
    t0 = time.perf_counter()
    sequence_losses(model, windows, cfg.eval.batch_size, device)
    eval_rate = windows.size / max(time.perf_counter() - t0, 1e-9)
    return PresetRate(preset, threads, step_s, eval_rate)


@dataclass(frozen=True)
class CpuEstimate:
    parallel: int
    rates: dict[str, PresetRate]
    runs: list[dict]
    """Per run: name parts, train_s, probe_s, eval_s, total_s."""
    wall_s: float

    def to_json(self) -> dict:
        return {"parallel": self.parallel, "cpu_count": os.cpu_count(),
                "rates": {k: dataclasses.asdict(v) for k, v in self.rates.items()},
                "runs": self.runs, "wall_s": self.wall_s,
                "core_s": sum(r["total_s"] for r in self.runs)}


def estimate_cpu(cfg: Config, plan: StudyPlan, parallel: int | None = None, steps: int = 6) -> CpuEstimate:
    """Seconds per run and the study's wall time on this machine (module docstring)."""
    parallel = max(1, parallel or cfg.sweep.parallel)
    threads = max(1, (os.cpu_count() or 1) // parallel)
    rates = {p: measure_preset(cfg, p, threads, steps) for p in dict.fromkeys(r.preset for r in plan.runs)}
    per_step = cfg.train.batch_size * cfg.model.seq_len
    runs = []
    for r in plan.runs:
        rate = rates[r.preset]
        train_s = r.steps * rate.step_s
        probe_s = r.probe_tokens / per_step * rate.step_s
        eval_tokens = r.eval_flops / (r.flops_per_token / 3)
        eval_s = eval_tokens / rate.eval_tokens_per_s
        runs.append({"preset": r.preset, "seed": r.seed, "stream": r.stream, "method": r.method, "train_s": train_s,
                     "probe_s": probe_s, "eval_s": eval_s, "total_s": train_s + probe_s + eval_s})
    workers = [0.0] * parallel
    for r in sorted(runs, key=lambda r: -r["total_s"]):  # largest first, like the sweep's pool
        workers[workers.index(min(workers))] += r["total_s"]
    return CpuEstimate(parallel, rates, runs, max(workers))
