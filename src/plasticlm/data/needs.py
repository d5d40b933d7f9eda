"""What a run reads of its data: training tokens per language, the targets to prepare, and reuse.

One rule for the stream's consumers: `plasticlm plan` sizes the data with it, ``data.prepare`` prepares
that much, and the training loop refuses (or reports) reading a language's tokens more than once.
"""

from __future__ import annotations

from plasticlm.config import Config
from plasticlm.data.stream import steps_per_task, task_count
from plasticlm.errors import DataError

TOKENIZE_TOKENS_PER_CPU_S = 5.0e5
"""Tokens per second per CPU core of the shard build: benchmarks/bench_shards.py measured 1.07M tokens/s
on two workers with the 1,024-token BPE on local .jsonl (the extra tokens over the extra seconds between
a 2 x 4 MB and a 2 x 12 MB corpus, on a shared, loaded 2-core machine; README "Data at scale"). A large
tokenizer (Qwen3's) may be slower: measure with that benchmark and pass ``plasticlm plan --tokenize-rate``."""


def served_tokens_per_task(cfg: Config) -> int:
    """Tokens a task really serves: whole steps of batch_size x seq_len (the stream's rounding)."""
    b, t = cfg.train.batch_size, cfg.model.seq_len
    return steps_per_task(cfg.stream.tokens_per_task, b, t) * b * t


def data_needs(cfg: Config) -> dict[str, int]:
    """Training tokens a run of ``cfg`` reads per language (module docstring); a stationary run's share is
    its expected value under the mixture weights."""
    s = cfg.stream
    total = served_tokens_per_task(cfg) * task_count(s)
    if s.kind == "permuted":
        need = {s.permuted_base: total}
    elif s.kind == "stationary":
        w = s.weights or [1.0] * len(s.languages)
        need = {lang: round(total * x / sum(w)) for lang, x in zip(s.languages, w)}
    else:
        need = {lang: total // len(s.languages) for lang in s.languages}
    p = cfg.probe
    need[p.language] = p.train_offset_tokens + p.steps * cfg.train.batch_size * cfg.model.seq_len
    return need


def token_targets(cfg: Config) -> dict[str, tuple[int, int]]:
    """(train, val) tokens to prepare per language from data.*_tokens and their overrides (0 = all)."""
    d = cfg.data
    return {lang: (d.train_tokens_per_language.get(lang, d.train_tokens),
                   d.val_tokens_per_language.get(lang, d.val_tokens)) for lang in cfg.data_languages()}


def reuse_factors(cfg: Config, available: dict[str, int]) -> dict[str, float]:
    """Per language with a known size: tokens a run reads / training tokens available (> 1 = reuse)."""
    return {lang: need / max(1, available[lang]) for lang, need in data_needs(cfg).items() if available.get(lang)}


def check_reuse(cfg: Config, available: dict[str, int], where: str) -> dict[str, float]:
    """The reuse factors; a DataError when a language would be read more than once and
    ``stream.allow_reuse`` is false (the message names the languages and both fixes)."""
    factors = reuse_factors(cfg, available)
    over = {lang: f for lang, f in factors.items() if f > 1.0}
    if over and not cfg.stream.allow_reuse:
        listed = ", ".join(f"{lang} {f:.2f}x ({data_needs(cfg)[lang]:,} of {available[lang]:,} tokens)"
                           for lang, f in over.items())
        raise DataError(f"{where}: the run would read these languages' training tokens more than once: {listed}. "
                        "Prepare more data (data.train_tokens, data.train_tokens_per_language) or shorten the run, "
                        "or accept the reuse with stream.allow_reuse = true")
    return factors


def format_reuse(factors: dict[str, float]) -> str:
    over = {lang: f for lang, f in factors.items() if f > 1.0}
    return ", ".join(f"{lang} {f:.2f}x" for lang, f in over.items()) if over else "none"
