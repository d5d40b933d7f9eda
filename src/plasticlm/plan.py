"""The compute plan of a study, from its config alone (no data, no training).

For every run of the sweep (each preset in ``sweep.presets`` x each seed in ``sweep.seeds``, and
a stationary twin of each when ``sweep.stationary``), with V the vocabulary (``model.vocab_size``
if > 0, else ``data.vocab_size``), T = ``model.seq_len`` and B = ``train.batch_size``:

    tasks           = len(stream.languages) * stream.cycles
    steps           = tasks * round(stream.tokens_per_task / (B T))   (whole steps per task, the stream's
                      rule: 5B / (256 x 2048) -> 9,537 in the paper; stationary segments likewise)
    tokens          = steps * B * T                                (what the stream really serves)
    probes          = len(probe_token_positions(cfg))             (see that function)
    scratch probes  = 1 per (preset, seed) if probe.scratch_baseline (shared by the stationary twin)
    probe tokens    = probe.steps * B * T * probe.replicates per probe
    train FLOPs     = F * tokens,   F = model.flops_per_token = 6 N + 12 L H K T (forward + backward)
    probe FLOPs     = F * probe tokens * (probes + scratch probes)
    eval FLOPs      = F / 3 per forward-only token (2 N + 4 L H K T):
                      probe validation: len(probe_eval_steps) evaluations (step 0, every eval_every
                      steps, and the last step) of probe.sequences x T tokens, per probe replicate;
                      training validation: tasks // eval.every_tasks + 1 evaluations (the + 1 at step 0)
                      of eval.sequences x T tokens on every training language and the probe language
    GPU-hours       = total FLOPs / (mfu * peak) / 3600

Peaks are dense (no sparsity) bf16 tensor-core throughputs from the vendors' data sheets, in
TFLOP/s: H100 SXM 989 (the PCIe card is about 756), H200 SXM 989, A100 312, L40S 362, MI300X 1307,
B200 2250. MFU 0.4 is a typical well-tuned value for GPT training at these sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from plasticlm.config import Config
from plasticlm.errors import PlasticError
from plasticlm.model import build_gpt_config, flops_per_token, non_embedding_params

GPU_PEAK_TFLOPS: dict[str, float] = {
    "h100": 989.0,
    "h200": 989.0,
    "a100": 312.0,
    "l40s": 362.0,
    "mi300x": 1307.0,
    "b200": 2250.0,
}
"""Dense bf16 peak per GPU in TFLOP/s (module docstring)."""


def probe_token_positions(cfg: Config) -> list[int]:
    """Training-token counts after which a run is probed: ``probe.probe_task_indices``, the rule the
    runs themselves follow (probes happen at task boundaries)."""
    from plasticlm.probe import probe_task_indices

    s = cfg.stream
    n_lang = len(s.languages)
    tokens_per_task = served_tokens_per_task(cfg)
    return [(k + 1) * tokens_per_task for k in probe_task_indices(cfg, n_lang * s.cycles, n_lang, tokens_per_task)]


def served_tokens_per_task(cfg: Config) -> int:
    """Tokens a task really serves: whole steps of batch_size x seq_len (the stream's rounding)."""
    from plasticlm.data.stream import steps_per_task

    b, t = cfg.train.batch_size, cfg.model.seq_len
    return steps_per_task(cfg.stream.tokens_per_task, b, t) * b * t


@dataclass(frozen=True)
class RunPlan:
    """Counts and compute of one run (formulas in the module docstring)."""

    preset: str
    seed: int
    stream: str
    non_embedding_params: int
    flops_per_token: int
    tokens: int
    steps: int
    probes: int
    scratch_probes: int
    probe_tokens: int
    train_flops: float
    probe_flops: float
    eval_flops: float
    total_flops: float
    gpu_hours: float


@dataclass(frozen=True)
class StudyPlan:
    runs: list[RunPlan]
    gpu: str
    peak_tflops: float
    mfu: float

    def totals(self) -> dict:
        keys = ("tokens", "steps", "probes", "scratch_probes", "probe_tokens", "train_flops", "probe_flops",
                "eval_flops", "total_flops", "gpu_hours")
        out = {k: sum(getattr(r, k) for r in self.runs) for k in keys}
        out["runs"] = len(self.runs)
        out["gpu_days"] = out["gpu_hours"] / 24
        return out

    def to_json(self) -> dict:
        return {
            "gpu": self.gpu,
            "peak_tflops": self.peak_tflops,
            "mfu": self.mfu,
            "runs": [dataclasses.asdict(r) for r in self.runs],
            "totals": self.totals(),
        }


def plan_study(cfg: Config, gpu: str = "h100", mfu: float = 0.4, peak_tflops: float | None = None) -> StudyPlan:
    """The compute plan of ``cfg``'s sweep; ``peak_tflops`` overrides the GPU table."""
    if not 0 < mfu <= 1:
        raise PlasticError(f"mfu = {mfu}: must be in (0, 1], e.g. 0.4")
    if peak_tflops is None:
        if gpu not in GPU_PEAK_TFLOPS:
            raise PlasticError(f"unknown GPU {gpu!r}; known: {', '.join(GPU_PEAK_TFLOPS)} (or give --peak-tflops)")
        peak_tflops = GPU_PEAK_TFLOPS[gpu]
    elif peak_tflops <= 0:
        raise PlasticError(f"peak TFLOP/s = {peak_tflops}: must be > 0")
    from plasticlm.probe import probe_eval_steps

    s, p, t = cfg.stream, cfg.probe, cfg.train
    seq = cfg.model.seq_len
    tasks = len(s.languages) * s.cycles
    per_step = t.batch_size * seq
    tokens = served_tokens_per_task(cfg) * tasks
    steps = tokens // per_step
    n_probes = len(probe_token_positions(cfg))
    probe_tokens_each = p.steps * per_step * p.replicates
    probe_eval_tokens = len(probe_eval_steps(p)) * p.sequences * seq * p.replicates
    train_evals = tasks // cfg.eval.every_tasks + 1 if cfg.eval.every_tasks > 0 else 0  # + the step-0 eval
    train_eval_tokens = train_evals * (len(s.languages) + 1) * cfg.eval.sequences * seq
    streams = [s.kind] + (["stationary"] if cfg.sweep.stationary and s.kind != "stationary" else [])
    runs = []
    for preset in cfg.sweep.presets:
        gpt = build_gpt_config(dataclasses.replace(cfg.model, preset=preset, depth=0), cfg.data.vocab_size)
        fpt = flops_per_token(gpt)
        for seed in cfg.sweep.seeds:
            for k, kind in enumerate(streams):
                scratch = int(p.scratch_baseline and k == 0)
                n = n_probes + scratch
                train_f = float(fpt) * tokens
                probe_f = float(fpt) * probe_tokens_each * n
                eval_f = fpt / 3 * (probe_eval_tokens * n + train_eval_tokens)
                total = train_f + probe_f + eval_f
                runs.append(RunPlan(
                    preset=preset, seed=seed, stream=kind, non_embedding_params=non_embedding_params(gpt),
                    flops_per_token=fpt, tokens=tokens, steps=steps, probes=n_probes, scratch_probes=scratch,
                    probe_tokens=probe_tokens_each * n, train_flops=train_f, probe_flops=probe_f,
                    eval_flops=eval_f, total_flops=total, gpu_hours=total / (mfu * peak_tflops * 1e12) / 3600,
                ))
    return StudyPlan(runs, gpu, float(peak_tflops), mfu)
