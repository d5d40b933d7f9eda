"""The compute plan of a study, from its config alone (no data, no training).

For every run of the study (``runspec.expand``: each preset in ``sweep.presets`` x each seed in
``sweep.seeds``, and a stationary twin of those in ``sweep.stationary_presets`` when
``sweep.stationary``, each with its own probe schedule), with V the vocabulary (``model.vocab_size``
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
    method FLOPs    = steps * the sum of the run's mitigations' ``extra_flops_per_step`` (a method axis's
                      extra work, counted as ``plasticlm compare`` reports it; 0 without mitigations)
    GPU-hours       = total FLOPs / (mfu * peak) / 3600

Peaks are dense (no sparsity) bf16 tensor-core throughputs from the vendors' data sheets, in
TFLOP/s: H100 SXM 989 (the PCIe card is about 756), H200 SXM 989, A100 312, L40S 362, MI300X 1307,
B200 2250. MFU 0.4 is a typical well-tuned value for GPT training at these sizes.

The data a study needs (``plan_data``), per language: the training tokens a run reads (``data_needs``:
a continual run reads ``cycles x tokens per task`` of each language, a stationary one its mixture
share of the run, the probe language ``probe.train_offset_tokens + probe.steps x B x T``), the
targets to prepare (``data.train_tokens`` / ``data.val_tokens`` and their per-language overrides),
the reuse factor (need / target; above 1 is an error unless ``stream.allow_reuse``), the disk of
the token shards (tokens x 2 or 4 bytes; the build holds a language's task files and its merged shard
at once, so the peak is that plus the largest language) and the CPU-hours to tokenize at a given rate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from plasticlm.config import Config
from plasticlm.data.needs import (
    TOKENIZE_TOKENS_PER_CPU_S,
    check_reuse,
    data_needs,
    served_tokens_per_task,
    token_targets,
)
from plasticlm.data.shards import dtype_for
from plasticlm.data.stream import task_count
from plasticlm.errors import PlasticError
from plasticlm.mitigations import build_all
from plasticlm.model import build_gpt_config, flops_per_token, non_embedding_params
from plasticlm.probe import probe_eval_steps, probe_task_indices
from plasticlm.runspec import RunSpec, expand
from plasticlm.units import GPU_PEAK_TFLOPS


def probe_token_positions(cfg: Config) -> list[int]:
    """Training-token counts after which a run is probed: ``probe.probe_task_indices``, the rule the
    runs themselves follow (probes happen at task boundaries)."""
    s = cfg.stream
    n_lang = len(s.languages)
    tokens_per_task = served_tokens_per_task(cfg)
    return [(k + 1) * tokens_per_task for k in probe_task_indices(cfg, task_count(s), n_lang, tokens_per_task)]


@dataclass(frozen=True)
class RunPlan:
    """Counts and compute of one run (formulas in the module docstring)."""

    name: str
    """The run's name (``runspec.RunSpec.name``)."""
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
    method_flops: float
    """The extra FLOPs of the run's mitigations over its training steps (each method's
    ``Mitigation.extra_flops_per_step``, as ``plasticlm compare`` reports them); 0 without one."""
    total_flops: float
    gpu_hours: float
    method: str | None = None
    """The run's method on a method axis (``sweep.methods``)."""


@dataclass(frozen=True)
class StudyPlan:
    runs: list[RunPlan]
    gpu: str
    peak_tflops: float
    mfu: float

    def totals(self) -> dict:
        keys = ("tokens", "steps", "probes", "scratch_probes", "probe_tokens", "train_flops", "probe_flops",
                "eval_flops", "method_flops", "total_flops", "gpu_hours")
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


def plan_study(cfg: Config, gpu: str = "h100", mfu: float = 0.4, peak_tflops: float | None = None,
               specs: list[RunSpec] | None = None) -> StudyPlan:
    """The compute plan of ``cfg``'s runs (``specs``, default ``runspec.expand(cfg)``); ``peak_tflops``
    overrides the GPU table."""
    if not 0 < mfu <= 1:
        raise PlasticError(f"mfu = {mfu}: must be in (0, 1], e.g. 0.4")
    if peak_tflops is None:
        if gpu not in GPU_PEAK_TFLOPS:
            raise PlasticError(f"unknown GPU {gpu!r}; known: {', '.join(GPU_PEAK_TFLOPS)} (or give --peak-tflops)")
        peak_tflops = GPU_PEAK_TFLOPS[gpu]
    elif peak_tflops <= 0:
        raise PlasticError(f"peak TFLOP/s = {peak_tflops}: must be > 0")
    s, p, t = cfg.stream, cfg.probe, cfg.train
    seq = cfg.model.seq_len
    tasks = task_count(s)
    per_step = t.batch_size * seq
    tokens = served_tokens_per_task(cfg) * tasks
    steps = tokens // per_step
    steps_per_task = served_tokens_per_task(cfg) // per_step
    probe_tokens_each = p.steps * per_step * p.replicates
    probe_eval_tokens = len(probe_eval_steps(p)) * p.sequences * seq * p.replicates
    train_evals = tasks // cfg.eval.every_tasks + 1 if cfg.eval.every_tasks > 0 else 0  # + the step-0 eval
    train_eval_tokens = train_evals * (len(s.languages) + 1) * cfg.eval.sequences * seq
    runs = []
    scratch_done: set[tuple[str, int]] = set()  # one scratch probe per size and seed, shared by the twins
    for spec in expand(cfg) if specs is None else specs:
        gpt = build_gpt_config(spec.cfg.model, cfg.data.vocab_size)
        fpt = flops_per_token(gpt)
        n_probes = len(probe_token_positions(spec.cfg))
        scratch = int(p.scratch_baseline and (spec.preset, spec.seed) not in scratch_done)
        scratch_done.add((spec.preset, spec.seed))
        n = n_probes + scratch
        train_f = float(fpt) * tokens
        probe_f = float(fpt) * probe_tokens_each * n
        eval_f = fpt / 3 * (probe_eval_tokens * n + train_eval_tokens)
        method_f = steps * sum(m.extra_flops_per_step(gpt, per_step, steps_per_task)
                               for m in build_all(spec.cfg.mitigations, spec.seed))
        total = train_f + probe_f + eval_f + method_f
        runs.append(RunPlan(
            name=spec.name, preset=spec.preset, seed=spec.seed, stream=spec.stream,
            non_embedding_params=non_embedding_params(gpt),
            flops_per_token=fpt, tokens=tokens, steps=steps, probes=n_probes, scratch_probes=scratch,
            probe_tokens=probe_tokens_each * n, train_flops=train_f, probe_flops=probe_f,
            eval_flops=eval_f, method_flops=float(method_f), total_flops=total,
            gpu_hours=total / (mfu * peak_tflops * 1e12) / 3600,
            method=spec.method,
        ))
    return StudyPlan(runs, gpu, float(peak_tflops), mfu)


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataPlan:
    """The token shards a study needs (module docstring); None where a size is only known once built."""

    languages: list[dict]
    tokens: int | None
    disk_bytes: int | None
    peak_disk_bytes: int | None
    cpu_hours: float | None
    tokens_per_cpu_s: float
    reuse: dict[str, float]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def plan_data(cfg: Config, tokens_per_cpu_s: float = TOKENIZE_TOKENS_PER_CPU_S) -> DataPlan:
    """Tokens, disk and CPU-hours of the data; raises DataError on reuse without ``stream.allow_reuse``."""
    if tokens_per_cpu_s <= 0:
        raise PlasticError(f"tokenize rate = {tokens_per_cpu_s}: must be > 0 tokens/s per CPU core")
    vocab = cfg.model.vocab_size or (257 if cfg.data.tokenizer == "bytes" else cfg.data.vocab_size)
    item = dtype_for(vocab).itemsize
    targets = token_targets(cfg)
    available = {lang: train for lang, (train, _) in targets.items() if train}
    needs: dict[str, int] = {}
    reuse: dict[str, float] = {}
    for spec in expand(cfg):
        for lang, f in check_reuse(spec.cfg, available, f"plan, run {spec.name}").items():
            reuse[lang] = max(reuse.get(lang, 0.0), f)
        for lang, n in data_needs(spec.cfg).items():
            needs[lang] = max(needs.get(lang, 0), n)
    rows = [{"lang": lang, "train_tokens": train or None, "val_tokens": val or None, "need_tokens": needs.get(lang),
             "reuse": reuse.get(lang), "disk_bytes": (train + val) * item if train and val else None}
            for lang, (train, val) in targets.items()]
    if all(r["disk_bytes"] is not None for r in rows):
        tokens = sum(r["train_tokens"] + r["val_tokens"] for r in rows)
        disk = tokens * item
        return DataPlan(rows, tokens, disk, disk + max(r["disk_bytes"] for r in rows),
                        tokens / tokens_per_cpu_s / 3600, tokens_per_cpu_s, reuse)
    return DataPlan(rows, None, None, None, None, tokens_per_cpu_s, reuse)
