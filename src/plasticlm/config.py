"""Typed configuration: one dataclass per section, loaded from TOML, overridden with ``--set a.b=c``.

Every field has a docstring (``help`` metadata). Unknown keys and wrong types are errors, all
reported at once with a "did you mean" for near misses: research code that silently ignores a
misspelled key has invalidated comparisons before. The resolved config round-trips through TOML and JSON.

Where a default comes from the study (arXiv:2606.24752), the field's help says so.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import tomli_w

from plasticlm.errors import ConfigError
from plasticlm.validate import config_problems

BASELINE_METHOD = "baseline"
"""The method of a run without mitigation on a study's method axis (``sweep.methods``)."""

PAPER_LANGUAGES = ["en", "zh", "fr", "ja", "es", "de", "pt", "ru"]
"""Training order of arXiv:2606.24752: consecutive languages are dissimilar."""


def opt(default: Any, help: str) -> Any:
    """A config field with a default and a docstring (lists and dicts are copied per instance)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The GPT: a named preset, or a depth dial, or explicit dimensions."""

    preset: str = opt("25K", "Size preset name (see `plasticlm presets`); '' to use the explicit fields.")
    depth: int = opt(0, "Depth dial: when > 0, build n_layer=depth with width depth*aspect (overrides preset).")
    aspect: int = opt(80, "d_model / n_layer for the depth dial (paper: ~80).")
    n_layer: int = opt(0, "Number of blocks (only when preset is '' and depth is 0).")
    d_model: int = opt(0, "Residual width (only when preset is '' and depth is 0).")
    n_head: int = opt(0, "Attention heads (0 = d_model / head_dim).")
    head_dim: int = opt(64, "Attention head dimension (paper: 64); presets carry their own.")
    seq_len: int = opt(128, "Context length in tokens (paper: 2048).")
    vocab_size: int = opt(0, "Vocabulary size; 0 = take it from the tokenizer.")
    init_std: float = opt(0.02, "Std of the N(0, std) init; residual projections get std/sqrt(2*n_layer).")
    gelu: Literal["exact", "tanh"] = opt("exact", "GeLU variant in the MLP.")
    fused_loss: bool = opt(
        True, "Output projection and loss on CPU in one pass with their gradients, in cached row chunks "
        "(model.linear_cross_entropy, faster than lm_head + F.cross_entropy there, equal to float rounding); "
        "false = lm_head + F.cross_entropy. CUDA and autocast always use F.cross_entropy. README 'Step speed'.",
    )
    fused_attention: bool = opt(
        True, "Causal attention on CPU by plasticlm's kernel (plasticlm.cpu_kernels: float32, head dim 16/32/64, "
        "AVX2; built with the C++ compiler on first use), 2-2.4x F.scaled_dot_product_attention at the micro "
        "presets and equal to float rounding; false = SDPA. CUDA, autocast, torch.compile and machines without the "
        "kernels always use SDPA. README 'Step speed'.",
    )
    fused_gelu: bool = opt(
        True, "The exact GeLU on CPU by plasticlm's kernel (plasticlm.cpu_kernels, float32), forward and backward "
        "in one pass each, equal to nn.GELU to float rounding; false = nn.GELU. Elsewhere always nn.GELU.",
    )
    init_from: str = opt(
        "", "A transformers GPT-2 directory (e.g. written by `plasticlm export`) whose weights start the run "
        "instead of a fresh init; the model section and tokenizer must match it (see the README, 'Hugging Face').",
    )


@dataclass
class DataConfig:
    """Where text comes from and how it becomes tokens (README, "Data")."""

    source: Literal["debian-docs", "local", "hf", "synthetic"] = opt(
        "debian-docs", "Corpus source: debian-docs (offline default), local, hf or synthetic."
    )
    home: str = opt("", "Cache directory; '' = $PLASTICLM_HOME or ~/.cache/plasticlm.")
    local_dir: str = opt("", "For source=local: a directory with one sub-directory per language.")
    hf_dataset: str = opt("", "For source=hf: dataset name or local path (e.g. uonlp/CulturaX).")
    hf_configs: dict[str, str] = opt({}, "For source=hf: per-language config name (default: the code).")
    hf_split: str = opt("train", "For source=hf: split to read.")
    hf_text_field: str = opt("text", "For source=hf: the text column.")
    hf_streaming: bool = opt(True, "For source=hf: stream from the hub instead of downloading.")
    max_bytes_per_language: int = opt(0, "Cap on text bytes read per language; 0 = no cap.")
    val_fraction: float = opt(0.05, "Fraction of documents per language held out for validation.")
    split_seed: int = opt(0, "Seed of the document-level train/validation split and paragraph shuffle.")
    tokenizer: str = opt("bpe", "'bpe' (train a byte-level BPE), 'bytes', or a path to a tokenizer.json.")
    vocab_size: int = opt(1024, "Vocabulary size of the trained BPE.")
    tokenizer_sample_bytes: int = opt(2_000_000, "Bytes per language used to train the BPE.")
    synthetic_bytes: int = opt(400_000, "For source=synthetic: bytes of text per language.")
    synthetic_seed: int = opt(0, "For source=synthetic: seed of the languages (each is also seeded by its code).")
    synthetic_shared_grammar: bool = opt(
        True,
        "For source=synthetic: all languages share one Markov structure and differ only in their word "
        "inventories (equally hard tasks); false = each language has its own structure.",
    )
    local_txt_docs: Literal["paragraphs", "file"] = opt(
        "paragraphs", "For source=local: a .txt file holds documents separated by blank lines, or is one document."
    )
    eot_token: str = opt("<|endoftext|>", "End-of-document special token, the separator between documents.")
    workers: int = opt(0, "Processes for HTML extraction (debian-docs) and token-shard building; 0 = all CPU cores.")
    train_tokens: int = opt(0, "Training tokens to prepare per language (paper: 100B); 0 = all of its split.")
    val_tokens: int = opt(0, "Validation tokens to prepare per language (paper: 1B); 0 = all of its split.")
    train_tokens_per_language: dict[str, int] = opt(
        {}, "Per-language overrides of data.train_tokens, e.g. {vi = 20_000_000_000} (paper: 20B Vietnamese)."
    )
    val_tokens_per_language: dict[str, int] = opt({}, "Per-language overrides of data.val_tokens.")
    tasks: int = opt(0, "Token-building tasks per language (slices of its documents; part of the shards' identity "
                        "for local and hf sources); 0 = data.workers.")
    executor: Literal["local", "slurm"] = opt(
        "local", "Where the token-building tasks run: local processes, or SLURM array jobs (datatrove executors)."
    )
    slurm_partition: str = opt("", "For data.executor = slurm: the partition.")
    slurm_time: str = opt("24:00:00", "For data.executor = slurm: the time limit of one task.")
    slurm_mem_per_cpu_gb: int = opt(4, "For data.executor = slurm: memory per task (one CPU each).")
    slurm_env_command: str = opt("", "For data.executor = slurm: a shell command that activates the environment.")


@dataclass
class StreamConfig:
    """The language stream the model trains on (arXiv:2606.24752, 'Continual problem')."""

    kind: Literal["continual", "stationary", "permuted"] = opt(
        "continual", "continual (languages in order), stationary (uniform mix) or permuted."
    )
    languages: list[str] = opt(PAPER_LANGUAGES, "Training languages, in task order (paper order).")
    tokens_per_task: int = opt(409_600, "Tokens per task instance (paper: 5B).")
    cycles: int = opt(2, "Number of passes over all languages (paper: up to 48).")
    weights: list[float] = opt([], "Stationary mixture weights per language; [] = uniform.")
    replay_fraction: float = opt(0.0, "Fraction of each batch replayed from earlier languages.")
    permuted_base: str = opt("en", "For kind=permuted: the base language whose ids are permuted per task.")
    seed: int = opt(0, "Seed of stream sampling (stationary mixture, permutations, replay).")
    allow_reuse: bool = opt(
        False, "Allow a run to read a language's training tokens more than once (the reuse factor is printed); "
        "false = an error at plan and train time.",
    )


@dataclass
class OptimConfig:
    """AdamW recipe (arXiv:2606.24752, 'Optimisation')."""

    lr: float = opt(0.0, "Peak LR; 0 = power law in non-embedding params through the two anchors.")
    lr_anchor_params: list[float] = opt(
        [4_933_120.0, 314_859_520.0], "Non-embedding counts of the LR anchors (paper: 5M and 314M)."
    )
    lr_anchor_values: list[float] = opt([3e-3, 1e-3], "LRs at the anchors (paper: 3e-3 and 1e-3).")
    beta1: float = opt(0.9, "Adam beta1 (paper: 0.9).")
    beta2: float = opt(0.95, "Adam beta2 (paper: 0.95).")
    eps: float = opt(1e-8, "Adam epsilon.")
    weight_decay: float = opt(0.1, "Decoupled weight decay on matrices (paper: 0.1).")
    warmup_frac: float = opt(0.05, "Linear warm-up as a fraction of a task's steps (paper: 5%).")
    schedule: Literal["constant", "cosine"] = opt("constant", "After warm-up: constant (paper) or cosine.")
    min_lr_frac: float = opt(0.1, "Cosine floor as a fraction of the peak LR.")
    grad_clip: float = opt(1.0, "Global gradient-norm clip; 0 = off.")
    impl: Literal["fused", "foreach", "forloop"] = opt(
        "fused", "AdamW implementation: one fused kernel (CPU and CUDA), torch's multi-tensor path, or the "
        "per-parameter loop (torch's CPU default, used before this option existed). Same update up to float "
        "rounding; README 'Step speed'.",
    )
    reset_at_task_start: bool = opt(
        True, "Reset the optimizer state at each task boundary (paper: yes); on a stationary stream at every "
        "task-worth of tokens, so that it differs from the continual run only in the data order.",
    )
    rewarm_at_task_start: bool = opt(
        True, "Restart the LR warm-up at each task boundary (paper: yes); stationary: every task-worth of tokens.",
    )
    decay_embeddings: bool = opt(
        True, "Apply weight decay to the tied token embedding and the position embedding (nanoGPT convention; "
        "the paper does not say); false = decay linear weights only.",
    )


@dataclass
class TrainConfig:
    """The training run: batch, device, seeds, checkpoints, logging."""

    batch_size: int = opt(32, "Sequences per optimizer step (paper: 256 x 2048 tokens).")
    micro_batch_size: int = opt(0, "Sequences per forward pass; 0 = batch_size (no accumulation).")
    seed: int = opt(0, "Seed of model init and all training randomness.")
    device: str = opt("cpu", "cpu, cuda, cuda:N or auto.")
    dtype: Literal["auto", "float32", "bfloat16"] = opt(
        "auto", "Autocast dtype for the forward pass; weights and optimizer state stay float32. auto = bfloat16 "
        "on CUDA, float32 on CPU.",
    )
    compile: Literal["auto", "on", "off"] = opt(
        "auto", "torch.compile the model for the training step; auto = on for CUDA, off on CPU (where it did not "
        "pay: README 'Step speed').",
    )
    threads: int = opt(0, "torch CPU threads; 0 = leave torch's default.")
    malloc: Literal["retain", "system"] = opt(
        "retain", "CPU memory between steps: retain = glibc keeps freed memory mapped for the next step (no page "
        "faults between steps; README \"Step speed\"), system = the C library's defaults. Results are identical "
        "either way; no effect off glibc (macOS).")
    checkpoint_every_tasks: int = opt(1, "Save a checkpoint every N task boundaries.")
    keep_last: int = opt(2, "Keep the last K checkpoints, plus those probes still need.")
    log_every: int = opt(10, "Write train/* metrics every N steps.")
    tensorboard: bool = opt(False, "Also log to TensorBoard (needs the tensorboard extra).")
    wandb: bool = opt(False, "Also log metrics, probe scores and the config to Weights & Biases (wandb extra).")
    wandb_mode: Literal["offline", "online"] = opt(
        "offline", "W&B mode: offline (default; files under RUN_DIR/logs/wandb, `wandb sync` uploads them) or online."
    )
    wandb_project: str = opt("plasticlm", "W&B project name.")
    components: list[str] = opt(
        list(("task_reset", "mitigations", "train_metrics", "evaluate", "probe", "progress", "tensorboard", "wandb")),
        "Loop components in firing order: registered names (`plasticlm components`) or package.module:name; "
        "options in [components.<name>]. tensorboard and wandb do nothing unless train.tensorboard / "
        "train.wandb; probe does nothing when no probe point is scheduled; mitigations does nothing without "
        "a [mitigations.<method>] table.",
    )


@dataclass
class EvalConfig:
    """Validation on every training language and the probe language."""

    every_tasks: int = opt(1, "Evaluate after every N tasks; 0 = never.")
    sequences: int = opt(32, "Validation sequences per language.")
    batch_size: int = opt(32, "Sequences per evaluation forward pass.")


@dataclass
class ProbeConfig:
    """Plasticity probe (arXiv:2606.24752, 'Probe')."""

    language: str = opt("vi", "Held-out probe language, never in the training stream (paper: vi).")
    steps: int = opt(100, "Optimizer steps per probe (paper: 9,537 = 5B tokens).")
    eval_every: int = opt(10, "Validation interval in probe steps, plus step 0 (paper: 95).")
    sequences: int = opt(64, "Fixed validation sequences of the probe language (paper: 1,280).")
    replicates: int = opt(1, "Probes per probe point, each training on its own window of the probe language's "
                             "training tokens; the score is their mean AUC, their spread the probe's noise "
                             "(paper: 1).")
    train_offset_tokens: int = opt(
        0, "Every probe of a run trains on the same window of the probe language's training split, starting at "
        "this token offset (the paper does not say which tokens its probes read).",
    )
    at_cycle_end: bool = opt(True, "Probe at every cycle boundary (paper: yes).")
    after_languages: list[str] = opt(["zh", "de", "ru"], "Also probe after these tasks (paper: zh, de, ru).")
    every_tokens: int = opt(0, "Also probe every N training tokens (at the task boundary that reaches it); 0 = off.")
    in_run: bool = opt(True, "Probe inside the training run (a callback) rather than post hoc.")
    scratch_baseline: bool = opt(True, "Also probe a fresh initialisation once per size and seed.")
    bootstrap: int = opt(1000, "Bootstrap resamples for the onset confidence interval.")


@dataclass
class SweepConfig:
    """A study over sizes and seeds."""

    presets: list[str] = opt(["3K", "25K", "85K"], "Presets to run.")
    seeds: list[int] = opt([0], "Seeds to run for each preset.")
    stationary: bool = opt(False, "Also run each preset on the stationary stream.")
    fit_left_censored: bool = opt(True, "Fit left-censored onsets (at or before the first smoothed probe point) "
                                        "at their value, as arXiv:2606.24752 did; false leaves them out.")
    stationary: bool = opt(False, "Also run presets on the stationary stream (a continual study's control).")
    stationary_presets: list[str] = opt(
        [], "With sweep.stationary: the presets that get a stationary twin (paper: 5M, 12M, 27M); [] = all."
    )
    stationary_probe_every_tokens: int = opt(
        0, "With sweep.stationary: the stationary runs are probed every N training tokens and only then (paper: "
        "5B); 0 = at the same token counts as their continual twins.",
    )
    methods: list[str] = opt(
        [], "A method axis (`plasticlm compare`): 'baseline' (no mitigation) and mitigations, each run with the "
        "settings of its [mitigations.<method>] table; [] = no axis (every [mitigations.*] table is on in every run).",
    )
    parallel: int = opt(1, "Runs trained at once (processes).")
    out_dir: str = opt("studies/demo", "Sweep directory: runs/, onsets.csv, fit.json, report/.")


@dataclass
class AnalysisConfig:
    """How the study turns probe scores into onsets and fits (they change results: never result-neutral)."""

    window: int = opt(3, "Odd window of the centred moving average whose earliest minimum is the onset "
                         "(arXiv:2606.24752: 3).")
    extrapolate_to: list[float] = opt(
        [1e9, 7e9], "Non-embedding parameter counts the study's power law is extrapolated to, in fit.json "
        "(arXiv:2606.24752 extrapolates to 1B and 7B).",
    )


@dataclass
class DistConfig:
    """One run on several processes (torchrun): data parallelism applied from outside the model (dist.py)."""

    strategy: Literal["none", "ddp", "fsdp"] = opt(
        "none", "none (one process), ddp (replicated weights, averaged gradients) or fsdp (FSDP2: weights, "
        "gradients and optimizer state sharded per block). Used only under torchrun (WORLD_SIZE > 1)."
    )
    backend: Literal["auto", "gloo", "nccl"] = opt("auto", "Process-group backend: auto = nccl on CUDA, gloo on CPU.")
    param_dtype: Literal["float32", "bfloat16"] = opt(
        "float32", "FSDP mixed precision: dtype of the gathered parameters in forward/backward (master weights "
        "stay float32)."
    )
    reduce_dtype: Literal["float32", "bfloat16"] = opt("float32", "FSDP mixed precision: dtype of the gradient "
                                                                  "reduce-scatter.")


@dataclass
class SlurmConfig:
    """Resources of a study's jobs under `--launcher slurm` (submitit job arrays; one array per preset)."""

    partition: str = opt("", "SLURM partition; '' = the cluster's default.")
    account: str = opt("", "SLURM account; '' = none.")
    qos: str = opt("", "SLURM quality of service; '' = none.")
    gpu: str = opt("h100", "GPU model, for the time limits from `plasticlm plan` (its peak table).")
    mfu: float = opt(0.4, "Model FLOPs utilisation assumed for the time limits.")
    gpus_per_run: int = opt(1, "GPUs per training run (torch.distributed ranks on one node; > 1 needs "
                               "dist.strategy = ddp or fsdp). 0 on CPU-only clusters.")
    cpus_per_gpu: int = opt(8, "CPU cores per GPU (per run when gpus_per_run = 0).")
    mem_gb_per_gpu: int = opt(64, "Host memory per GPU in GB (per run when gpus_per_run = 0).")
    time_factor: float = opt(2.0, "Time limit = this x the plan's estimate of the job (+ 10 minutes of start-up).")
    max_minutes: int = opt(2880, "Longest time limit asked for; a longer run is requeued at its limit and "
                                 "resumes from its last checkpoint.")
    max_retries: int = opt(2, "Resubmissions of runs and probes whose jobs failed (preempted and timed-out "
                              "jobs requeue themselves and do not count).")
    array_parallelism: int = opt(64, "Array tasks of one array running at once.")
    extra: dict[str, str] = opt({}, "Further sbatch options, e.g. {constraint = 'h100'}.")
    folder: str = opt("", "Job scripts and logs; '' = STUDY_DIR/slurm.")


@dataclass
class Config:
    """A whole study. Sections: model, data, stream, optim, train, eval, probe, sweep, analysis, dist, slurm,
    components, mitigations."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The GPT."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Corpus and tokenizer."})
    stream: StreamConfig = field(default_factory=StreamConfig, metadata={"help": "Language stream."})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimiser recipe."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Training run."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Validation."})
    probe: ProbeConfig = field(default_factory=ProbeConfig, metadata={"help": "Plasticity probes."})
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "Sizes and seeds."})
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig,
                                     metadata={"help": "Onset window and fit extrapolations."})
    dist: DistConfig = field(default_factory=DistConfig, metadata={"help": "Several processes per run (torchrun)."})
    slurm: SlurmConfig = field(default_factory=SlurmConfig, metadata={"help": "Cluster jobs (--launcher slurm)."})
    components: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "Options of loop components, one [components.<name>] table each "
                                                "(checked against the component's own options)."})
    mitigations: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "Plasticity mitigations, one [mitigations.<method>] table each "
                                                "(`plasticlm mitigations` lists methods and keys), run in a fixed "
                                                "order by the `mitigations` loop component."})

    def validate(self) -> list[str]:
        """Cross-field checks; returns a list of problems (empty when valid)."""
        p: list[str] = []
        positive = {
            "model.seq_len": self.model.seq_len,
            "stream.tokens_per_task": self.stream.tokens_per_task,
            "stream.cycles": self.stream.cycles,
            "train.batch_size": self.train.batch_size,
            "eval.sequences": self.eval.sequences,
            "eval.batch_size": self.eval.batch_size,
            "probe.steps": self.probe.steps,
            "probe.eval_every": self.probe.eval_every,
            "probe.sequences": self.probe.sequences,
            "probe.replicates": self.probe.replicates,
            "data.vocab_size": self.data.vocab_size,
        }
        p += [f"{k} = {v}: must be > 0" for k, v in positive.items() if v <= 0]
        if not self.stream.languages:
            p.append("stream.languages is empty: list at least one training language")
        if self.probe.language in self.stream.languages:
            p.append(
                f"probe.language = {self.probe.language!r} is also a training language "
                "(stream.languages): the probe language must be held out"
            )
        unknown = [lang for lang in self.probe.after_languages if lang not in self.stream.languages]
        if unknown and self.stream.kind != "permuted":
            p.append(
                f"probe.after_languages has {unknown}, not in stream.languages {self.stream.languages}: "
                "list training languages only (or [] for cycle-end probes only)"
            )
        if len(set(self.stream.languages)) != len(self.stream.languages):
            p.append(f"stream.languages has duplicates: {self.stream.languages}")
        if self.stream.weights and len(self.stream.weights) != len(self.stream.languages):
            p.append(
                f"stream.weights has {len(self.stream.weights)} entries for "
                f"{len(self.stream.languages)} languages: give one weight per language or []"
            )
        if any(w < 0 for w in self.stream.weights) or (self.stream.weights and sum(self.stream.weights) <= 0):
            p.append("stream.weights must be non-negative with a positive sum")
        if not 0.0 <= self.stream.replay_fraction < 1.0:
            p.append(f"stream.replay_fraction = {self.stream.replay_fraction}: must be in [0, 1)")
        if self.data.max_bytes_per_language < 0 or self.data.synthetic_bytes <= 0:
            p.append("data.max_bytes_per_language must be >= 0 and data.synthetic_bytes > 0")
        if not self.data.eot_token:
            p.append("data.eot_token is empty: name the end-of-document special token")
        if not 0.0 < self.data.val_fraction < 1.0:
            p.append(f"data.val_fraction = {self.data.val_fraction}: must be in (0, 1)")
        o = self.optim
        if not (0.0 <= o.beta1 < 1.0 and 0.0 <= o.beta2 < 1.0):
            p.append(f"optim.beta1 = {o.beta1}, optim.beta2 = {o.beta2}: Adam betas must be in [0, 1)")
        if o.eps <= 0 or o.lr < 0 or o.weight_decay < 0 or o.grad_clip < 0:
            p.append("optim.eps must be > 0 and optim.lr, optim.weight_decay, optim.grad_clip >= 0 "
                     f"(got eps={o.eps}, lr={o.lr}, weight_decay={o.weight_decay}, grad_clip={o.grad_clip})")
        if not 0.0 <= o.min_lr_frac <= 1.0:
            p.append(f"optim.min_lr_frac = {o.min_lr_frac}: must be in [0, 1]")
        if self.probe.every_tokens < 0:
            p.append(f"probe.every_tokens = {self.probe.every_tokens}: must be >= 0 (0 = off)")
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?|mps", self.train.device):
            p.append(f"train.device = {self.train.device!r}: use cpu, cuda, cuda:N, mps or auto")
        if not 0.0 <= self.optim.warmup_frac <= 1.0:
            p.append(f"optim.warmup_frac = {self.optim.warmup_frac}: must be in [0, 1]")
        mb = self.train.micro_batch_size
        if mb < 0 or (mb > 0 and self.train.batch_size % mb):
            p.append(
                f"train.micro_batch_size = {mb} must divide train.batch_size = {self.train.batch_size} "
                "(or be 0 for no accumulation)"
            )
        anchors = (self.optim.lr_anchor_params, self.optim.lr_anchor_values)
        if len(anchors[0]) != 2 or len(anchors[1]) != 2 or min(anchors[0] + anchors[1]) <= 0:
            p.append("optim.lr_anchor_params and optim.lr_anchor_values need two positive numbers each")
        if self.model.preset == "" and self.model.depth == 0 and (self.model.n_layer <= 0 or self.model.d_model <= 0):
            p.append("model: set a preset, a depth, or both n_layer and d_model")
        if self.stream.kind == "permuted" and not self.stream.permuted_base:
            p.append("stream.permuted_base must name the base language of the permuted stream")
        if not self.sweep.presets:
            p.append("sweep.presets is empty")
        if not self.sweep.seeds:
            p.append("sweep.seeds is empty")
        w = self.analysis.window
        if w < 1 or w % 2 == 0:
            p.append(f"analysis.window = {w}: must be an odd positive integer (arXiv:2606.24752: 3)")
        if any(not 0 < x < float("inf") for x in self.analysis.extrapolate_to):
            p.append(f"analysis.extrapolate_to = {self.analysis.extrapolate_to}: every size must be a positive "
                     "number of parameters (or [] for none)")
        sl = self.slurm
        if sl.gpus_per_run < 0 or sl.cpus_per_gpu <= 0 or sl.mem_gb_per_gpu <= 0 or sl.max_minutes <= 0:
            p.append("slurm.gpus_per_run must be >= 0 and slurm.cpus_per_gpu, slurm.mem_gb_per_gpu, "
                     "slurm.max_minutes > 0")
        if sl.time_factor <= 0 or not 0 < sl.mfu <= 1 or sl.max_retries < 0 or sl.array_parallelism <= 0:
            p.append("slurm.time_factor must be > 0, slurm.mfu in (0, 1], slurm.max_retries >= 0 and "
                     "slurm.array_parallelism > 0")
        if sl.gpus_per_run > 1 and self.dist.strategy == "none":
            p.append(f"slurm.gpus_per_run = {sl.gpus_per_run} with dist.strategy = 'none': set dist.strategy "
                     "to ddp or fsdp so that the run's ranks train one model")
        return p + self._scale_problems() + inapplicable_keys(self)

    def data_languages(self) -> list[str]:
        """The languages whose data a run reads: stream.languages + probe.language, without repeats; for
        the permuted stream, whose task names are only labels, stream.permuted_base + probe.language."""
        if self.stream.kind == "permuted":
            return list(dict.fromkeys([self.stream.permuted_base, self.probe.language]))
        return list(dict.fromkeys([*self.stream.languages, self.probe.language]))

    def _scale_problems(self) -> list[str]:
        """Checks of the keys for token targets, data building and the stationary control."""
        p: list[str] = []
        d, sw = self.data, self.sweep
        if d.train_tokens < 0 or d.val_tokens < 0 or d.tasks < 0 or d.workers < 0:
            p.append("data.train_tokens, data.val_tokens, data.tasks and data.workers must be >= 0 (0 = automatic)")
        langs = self.data_languages()
        for key in ("train_tokens_per_language", "val_tokens_per_language"):
            table = getattr(d, key)
            if any(v <= 0 for v in table.values()):
                p.append(f"data.{key} = {table}: every value must be > 0 (drop a language to use the default)")
            if extra := sorted(set(table) - set(langs)):
                p.append(f"data.{key} names {extra}, which this study does not read (its languages: {langs}): "
                         "remove them")
        if d.executor == "slurm" and not d.slurm_partition:
            p.append("data.executor = 'slurm' needs data.slurm_partition (the partition to submit to)")
        if self.probe.train_offset_tokens < 0:
            p.append(f"probe.train_offset_tokens = {self.probe.train_offset_tokens}: must be >= 0")
        if extra := [x for x in sw.stationary_presets if x not in sw.presets]:
            p.append(f"sweep.stationary_presets has {extra}, not in sweep.presets {sw.presets}: list presets of the "
                     "study (their continual twins are the comparison)")
        if len(set(sw.stationary_presets)) != len(sw.stationary_presets):
            p.append(f"sweep.stationary_presets has duplicates: {sw.stationary_presets}")
        if sw.stationary_probe_every_tokens < 0:
            p.append(f"sweep.stationary_probe_every_tokens = {sw.stationary_probe_every_tokens}: must be >= 0")
        if sw.stationary and self.stream.replay_fraction > 0:
            p.append("sweep.stationary with stream.replay_fraction > 0: a stationary twin cannot replay (replay "
                     "applies to the continual stream only); set one of them off")
        return p


KIND_KEYS: dict[str, tuple[tuple[str, ...], Any]] = {
    "stream.weights": (("stationary",), []),
    "stream.replay_fraction": (("continual",), 0.0),
    "stream.permuted_base": (("permuted",), "en"),
    "probe.after_languages": (("continual", "stationary"), []),
    "sweep.stationary": (("continual",), False),
}
"""Keys that apply to some stream kinds only: key -> (the kinds, the inert value it must keep on any other
kind). A key is never silently ignored: on a kind it does not apply to, any other value is an error."""

SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "data.local_dir": ("local",),
    "data.local_txt_docs": ("local",),
    "data.hf_dataset": ("hf",),
    "data.hf_configs": ("hf",),
    "data.hf_split": ("hf",),
    "data.hf_text_field": ("hf",),
    "data.hf_streaming": ("hf",),
    "data.synthetic_bytes": ("synthetic",),
    "data.synthetic_seed": ("synthetic",),
    "data.synthetic_shared_grammar": ("synthetic",),
}
"""Keys that apply to some corpus sources only (data.source); elsewhere they must keep their default."""

MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "model.aspect": ("depth",),
    "model.head_dim": ("depth", "explicit"),
    "model.n_layer": ("explicit",),
    "model.d_model": ("explicit",),
    "model.n_head": ("explicit",),
}
"""Keys that apply to some ways of sizing the model only: a preset (which carries its own shape), the
depth dial (model.depth > 0) or explicit dimensions (model.preset = ''); elsewhere they keep their default."""

CONDITIONAL_KEYS: dict[str, tuple[str, Any]] = {
    "sweep.stationary_presets": ("sweep.stationary", True),
    "sweep.stationary_probe_every_tokens": ("sweep.stationary", True),
    "data.slurm_partition": ("data.executor", "slurm"),
    "data.slurm_time": ("data.executor", "slurm"),
    "data.slurm_mem_per_cpu_gb": ("data.executor", "slurm"),
    "data.slurm_env_command": ("data.executor", "slurm"),
    "optim.min_lr_frac": ("optim.schedule", "cosine"),
    "optim.lr_anchor_params": ("optim.lr", 0.0),
    "optim.lr_anchor_values": ("optim.lr", 0.0),
    "dist.param_dtype": ("dist.strategy", "fsdp"),
    "dist.reduce_dtype": ("dist.strategy", "fsdp"),
}
"""Keys that only act when another key has a value: key -> (that key, the value)."""


def model_mode(model: ModelConfig) -> str:
    """How the model is sized: 'depth' (model.depth > 0 wins), 'preset', or 'explicit' dimensions."""
    return "depth" if model.depth > 0 else "preset" if model.preset else "explicit"


def _get(cfg: Any, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def _default(dotted: str) -> Any:
    section, key = dotted.split(".")
    f = {f.name: f for f in dataclasses.fields(_hints(Config)[section])}[key]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def inapplicable_keys(cfg: Config) -> list[str]:
    """Problems for keys set on a stream kind, source or mode they do not apply to (they would be ignored)."""
    p = []
    kind, source = cfg.stream.kind, cfg.data.source
    for key, (kinds, inert) in KIND_KEYS.items():
        if kind not in kinds and _get(cfg, key) != inert:
            p.append(f"{key} = {_get(cfg, key)!r} applies only to stream.kind = {' or '.join(kinds)}, and this "
                     f"stream is {kind!r}: set it to {inert!r} (or remove it where that is the default)")
    for key, sources in SOURCE_KEYS.items():
        if source not in sources and _get(cfg, key) != _default(key):
            p.append(f"{key} = {_get(cfg, key)!r} applies only to data.source = {' or '.join(sources)}, and this "
                     f"source is {source!r}: remove it")
    for key, modes in MODEL_KEYS.items():
        if model_mode(cfg.model) not in modes and _get(cfg, key) != _default(key):
            p.append(f"{key} = {_get(cfg, key)!r} applies only to a model sized by {' or '.join(modes)}, and this "
                     f"one is sized by {model_mode(cfg.model)} (model.preset / model.depth): remove it")
    for key, (when, value) in CONDITIONAL_KEYS.items():
        if _get(cfg, when) != value and _get(cfg, key) != _default(key):
            p.append(f"{key} = {_get(cfg, key)!r} acts only with {when} = {value!r}: remove it or set {when}")
    return p


# --------------------------------------------------------------------------------------------
# Generic machinery: dict <-> dataclass with type checks, overrides, TOML/JSON
# --------------------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, errors: list[str]) -> Any:
    """Check ``value`` against type ``tp``; return the converted value (or None after an error)."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        errors.append(f"{where} = {value!r}: must be {_type_name(tp)}{hint}")
        return None
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where, errors)
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list | tuple):
            errors.append(f"{where} = {value!r}: must be a list of {_type_name(item_tp)}")
            return None
        return [_coerce(v, item_tp, f"{where}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = get_args(tp)
        if not isinstance(value, dict):
            errors.append(f"{where} = {value!r}: must be a table of {_type_name(val_tp)}")
            return None
        return {str(k): _coerce(v, val_tp, f"{where}.{k}", errors) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{where}: must be a table (section), got {value!r}")
            return None
        return _from_dict(tp, value, where, errors)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    errors.append(f"{where} = {value!r}: must be {_type_name(tp)}, got {type(value).__name__}")
    return None


def _from_dict(cls: type, data: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f" (did you mean {(prefix + '.' if prefix else '') + close[0]!r}?)" if close else ""
            valid = ", ".join(names)
            errors.append(f"unknown key {where!r}{hint}; valid keys here: {valid}")
            continue
        converted = _coerce(value, hints[key], where, errors)
        if converted is not None:
            kwargs[key] = converted
    return cls(**kwargs)


def parse_section(cls: type, data: dict[str, Any], prefix: str) -> tuple[Any, list[str]]:
    """A dataclass from a table with the config's rules (unknown keys, wrong types); returns
    (instance, problems). Components use it for their ``[components.<name>]`` options."""
    errors: list[str] = []
    if not isinstance(data, dict):
        return cls(), [f"{prefix}: must be a table, got {data!r}"]
    return _from_dict(cls, data, prefix, errors), errors


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (None values dropped, since TOML has no null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(dataclasses.asdict(obj))


def from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Build and validate a Config; raises ConfigError listing every problem."""
    errors: list[str] = []
    cfg = _from_dict(Config, data, "", errors)
    if not errors:
        errors += cfg.validate()
    if not errors:  # presets, the source's languages, finite numbers, registered checks (validate.py)
        errors += config_problems(cfg)
    if errors:
        raise ConfigError(errors, source)
    return cfg


def parse_override(text: str) -> tuple[list[str], str]:
    """'a.b=c' -> (['a', 'b'], 'c')."""
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected KEY=VALUE, e.g. --set model.preset=85K"], "--set")
    key, raw = text.split("=", 1)
    path = [k for k in key.strip().split(".") if k]
    if not path:
        raise ConfigError([f"--set {text!r}: empty key"], "--set")
    return path, raw.strip()


def _field_type(path: list[str]) -> Any:
    """The declared type at a dotted path, or None if the path is unknown (reported later)."""
    tp: Any = Config
    for key in path:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = _hints(tp)
        if key not in hints:
            return None
        tp = hints[key]
    return tp


def _parse_value(raw: str, tp: Any) -> Any:
    """Parse an override string as TOML; fall back to a bare string or a comma-separated list."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if tp is not None and get_origin(tp) is list:
        body = raw.strip().removeprefix("[").removesuffix("]")
        (item_tp,) = get_args(tp)
        items = [s.strip().strip("'\"") for s in body.split(",") if s.strip()]
        return [_parse_value(s, item_tp) if item_tp is not str else s for s in items]
    return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply '--set a.b=c' overrides to a raw config dict (values parsed to the field's type)."""
    data = copy.deepcopy(data)  # not a JSON round trip: TOML dates are not JSON
    for text in overrides:
        path, raw = parse_override(text)
        tp = _field_type(path)
        value = _parse_value(raw, tp)
        if tp is str and not isinstance(value, str):
            value = raw  # e.g. --set model.preset=5 means the string "5"
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError([f"--set {text!r}: {key!r} is not a section"], "--set")
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load TOML (or start from defaults when path is None), apply overrides, validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError([f"config file {p} {'is a directory' if p.is_dir() else 'does not exist'}"], source)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([f"not valid TOML: {e}; fix the syntax there (https://toml.io)"], source) from e
        except UnicodeDecodeError as e:
            raise ConfigError([f"not UTF-8 text (byte {e.start}): a config is a TOML text file"], source) from e
        except OSError as e:
            raise ConfigError([f"cannot read it: {e.strerror}"], source) from e
    data = apply_overrides(data, overrides or [])
    return from_dict(data, source)


def dumps_toml(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))


def dumps_json(cfg: Config) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def loads_toml(text: str) -> Config:
    return from_dict(tomllib.loads(text), "toml")


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every field, for docs and `config show --describe`."""
    rows = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, key)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, _type_name(tp), repr(default), f.metadata.get("help", "")))
    return rows
