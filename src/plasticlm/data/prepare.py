"""corpus -> split -> tokenizer -> token shards: what the stream and the trainer read.

``prepare_data(cfg)`` builds whatever is missing from the cache and returns memory-mapped token
arrays per language and split. The shards are built by streaming, in parallel processes,
resumably (``build.py``, on datatrove): cached sources (debian-docs, synthetic) from their docs.jsonl,
direct sources (local files, hf datasets) in place, with no copy of the text. Everything is keyed by
content: the corpus by its sha256 (a direct source by its ``key()``: files and settings), the BPE by
its training inputs, the shards by (corpus, tokenizer hash, split seed and fraction, and the token
targets and build tasks when set), so a second call only reads manifests and headers.

The tokenizer is trained on the config's languages (``stream.languages`` + ``probe.language``
(+ ``stream.permuted_base``)) plus any other requested language, whichever languages a call asks
for: ``prepare_data(cfg, ["vi"])`` uses the same tokenizer as ``prepare_data(cfg)``.

Bytes per token (for bits per byte, style.md 8): UTF-8 bytes of a language's validation text divided
by its validation token count, end-of-document tokens included; ``bpb = loss_nats / ln 2 / bytes_per_token``
(``plasticlm.evaluate.bits_per_byte``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plasticlm import dist
from plasticlm.cachelock import cache_lock
from plasticlm.data import shards
from plasticlm.data.build import LangBuild, build_languages, hash_is_val, route_salt, split_mask
from plasticlm.data.corpus import build_corpus, iter_documents
from plasticlm.data.needs import token_targets
from plasticlm.data.paths import home_dir, shard_base, stable_hash, tokenizer_dir
from plasticlm.data.sources import Source, make_source
from plasticlm.data.tokenizer import BYTES, bpe_key, build_bpe, cached_bpe, load_tokenizer, take_bytes
from plasticlm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from plasticlm.config import Config, DataConfig

SPLITS = ("train", "val")


@dataclass
class PreparedData:
    """Tokens per language and split, and what they were built from."""

    tokenizer_path: str  # tokenizer.json (or "bytes")
    vocab_size: int  # model vocabulary size (incl. specials)
    eot_id: int  # end-of-document token id
    train: dict[str, np.ndarray]  # lang -> 1-D token array (memmap), training split
    val: dict[str, np.ndarray]  # lang -> 1-D token array (memmap), validation split
    bytes_per_token: dict[str, float]  # lang -> UTF-8 bytes per token on its validation split
    manifest: dict  # corpus source, per-language sha256/bytes/docs, tokenizer hash, shard paths


def default_languages(cfg: Config) -> list[str]:
    """stream.languages + probe.language, without repeats (``Config.data_languages``)."""
    return cfg.data_languages()


def _cached_sample(path: str, n_docs: int, lang: str, seed: int, val_fraction: float, n_bytes: int) -> list[str]:
    """The first ``n_bytes`` of the training split in its permuted order (the tokenizer's sample of a
    cached source), read in two passes over docs.jsonl: document sizes, then the chosen documents."""

    is_val, position = split_mask(n_docs, lang, seed, val_fraction)
    sizes = np.fromiter((len(d.encode("utf-8")) for d in iter_documents(Path(path))), dtype=np.int64, count=n_docs)
    train = np.flatnonzero(~is_val)
    order = train[np.argsort(position[train], kind="stable")]
    upto = int(np.searchsorted(np.cumsum(sizes[order]), n_bytes)) + 1
    chosen = {int(i): k for k, i in enumerate(order[:upto])}
    picked: list[str] = [""] * len(chosen)
    for i, doc in enumerate(iter_documents(Path(path))):
        if i in chosen:
            picked[chosen[i]] = doc
    return take_bytes(picked, n_bytes)


def _direct_sample(src: Source, lang: str, seed: int, val_fraction: float, tasks: int, n_bytes: int) -> list[str]:
    """Training-split documents of a direct source, in the build's task order, up to ``n_bytes``."""
    salt, out, total = route_salt(seed, lang), [], 0
    for t in range(tasks):
        for doc in src.task_documents(lang, t, tasks):
            if doc.strip() and not hash_is_val(doc, salt, val_fraction):
                out.append(doc)
                total += len(doc.encode("utf-8"))
                if total >= n_bytes:
                    return take_bytes(out, n_bytes)
    return out


def _tokenizer(cfg: Config, src: Source, corpora: dict[str, dict[str, Any]], tasks: int,
               progress: bool) -> tuple[str, dict]:
    """Path of the tokenizer to use (trained and cached when data.tokenizer = 'bpe'), and its training info."""
    d = cfg.data
    if d.tokenizer == BYTES:
        return BYTES, {"kind": "bytes"}
    if d.tokenizer != "bpe":
        return str(Path(d.tokenizer).expanduser().resolve()), {"kind": "file"}
    # Equal-sized samples (data-sources.md). Cached sources: the size is fixed from the manifests alone
    # (the smaller of the setting and the smallest training split), so the cache key is known without
    # reading any text. Direct sources: the setting, cut to the smallest sample found.
    if src.direct:
        sample = d.tokenizer_sample_bytes
        inputs = {lang: [m["source_key"], d.split_seed, d.val_fraction, tasks] for lang, m in sorted(corpora.items())}
    else:
        train_bytes = {lang: int(m["bytes"] * (1.0 - d.val_fraction)) for lang, m in corpora.items()}
        sample = max(1, min(d.tokenizer_sample_bytes, *train_bytes.values()))
        inputs = {lang: [m["sha256"], d.split_seed, d.val_fraction] for lang, m in sorted(corpora.items())}
    key = bpe_key(d.vocab_size, d.eot_token, inputs, sample)
    info = {"kind": "bpe", "key": key, "languages": sorted(corpora), "sample_bytes_per_language": sample}
    home = home_dir(d.home)
    path = cached_bpe(home, key)
    if path is None:
        with cache_lock(tokenizer_dir(home, key).with_suffix(".lock"), "the tokenizer"):
            path = cached_bpe(home, key)  # the process this one waited for may have trained it
            if path is None:
                path = build_bpe(home, key, _bpe_samples(src, corpora, d, tasks, sample), d.vocab_size,
                                 d.eot_token, progress)
    return str(path), info


def _bpe_samples(src: Source, corpora: dict[str, dict[str, Any]], d: DataConfig, tasks: int,
                 sample: int) -> dict[str, list[str]]:
    """The tokenizer's training documents per language (equal-sized samples of the training splits)."""
    if src.direct:
        samples = {lang: _direct_sample(src, lang, d.split_seed, d.val_fraction, tasks, sample) for lang in corpora}
        smallest = min(sum(len(x.encode("utf-8")) for x in docs) for docs in samples.values())
        return {lang: take_bytes(docs, smallest) for lang, docs in samples.items()}
    return {lang: _cached_sample(m["path"], m["documents"], lang, d.split_seed, d.val_fraction, sample)
            for lang, m in corpora.items()}


def _direct_corpora(src: Source, langs: list[str]) -> dict[str, dict[str, Any]]:
    """What stands for a manifest for a direct source: its identity (files and settings), nothing copied."""
    return {lang: {"source": src.name, "source_key": src.key(), "documents": None, "bytes": None, "sha256": None}
            for lang in langs}


def build_tasks(cfg: Config) -> int:
    """Build tasks per language: data.tasks, or one per worker for direct sources, one for cached ones."""
    d = cfg.data
    if d.tasks:
        return d.tasks
    return (d.workers or os.cpu_count() or 1) if make_source(d).direct else 1


def prepare_data_ranked(cfg: Config, progress: bool = True) -> PreparedData:
    """``prepare_data`` under torchrun (one process: exactly it): rank 0 builds what is missing while
    the other ranks wait, then they read the cache."""
    data = prepare_data(cfg, progress=progress) if dist.is_main() else None
    dist.barrier()
    return data if data is not None else prepare_data(cfg, progress=False)


def prepare_data(cfg: Config, languages: list[str] | None = None, progress: bool = True) -> PreparedData:
    """Build what is missing (corpus, tokenizer, shards) and return memory-mapped tokens.

    languages default: cfg.stream.languages + [cfg.probe.language] (+ cfg.stream.permuted_base).
    Raises DataError naming the language when its data is missing, empty, or shorter than one
    training sequence (model.seq_len + 1 tokens) in either split.
    """
    problems = cfg.validate()
    if problems:
        raise ConfigError(problems, "config")
    d = cfg.data
    langs = list(dict.fromkeys(languages or default_languages(cfg)))
    all_langs = list(dict.fromkeys([*default_languages(cfg), *langs]))
    src = make_source(d)
    tasks = build_tasks(cfg)
    corpora = _direct_corpora(src, all_langs) if src.direct else build_corpus(d, all_langs, progress=progress)
    tok_path, tok_info = _tokenizer(cfg, src, corpora, tasks, progress)
    tok = load_tokenizer(tok_path, d.eot_token)
    if cfg.model.vocab_size and cfg.model.vocab_size < tok.vocab_size:
        raise DataError(
            f"model.vocab_size = {cfg.model.vocab_size} is smaller than the tokenizer's {tok.vocab_size} tokens "
            f"({tok_path}); set model.vocab_size = 0 (take it from the tokenizer) or >= {tok.vocab_size}"
        )


    home = home_dir(d.home)
    targets = token_targets(cfg)
    keys, builds = {}, []
    for lang in langs:
        m = corpora[lang]
        spec = {"format": shards.FORMAT, "corpus": m["sha256"] or m["source_key"], "tokenizer": tok.hash,
                "split_seed": d.split_seed, "val_fraction": d.val_fraction, "lang": lang}
        goal = targets.get(lang, (d.train_tokens, d.val_tokens))
        if any(goal):  # keys without targets are those of the earlier in-memory pipeline: its caches stay valid
            spec["targets"] = list(goal)
        if src.direct:
            spec.update(tasks=tasks, max_bytes=d.max_bytes_per_language)
        keys[lang] = stable_hash(spec)
        base = shard_base(home, tok.hash, lang, keys[lang])
        if any(shards.read_header(base, s) is None for s in SPLITS):
            builds.append(LangBuild(
                lang=lang, base=str(base), work=str(home / "work" / tok.hash[:16] / lang / keys[lang][:16]),
                tasks=tasks if src.direct else max(1, min(tasks, m["documents"])), direct=src.direct,
                tokenizer=tok_path, eot_token=d.eot_token, vocab_size=tok.vocab_size, split_seed=d.split_seed,
                val_fraction=d.val_fraction, targets=tuple(goal), max_bytes=d.max_bytes_per_language,
                data=dataclasses.asdict(d), docs_path=m.get("path", ""), n_docs=m["documents"] or 0,
                text_bytes=m["bytes"] or 0,
                meta={"lang": lang, "corpus_sha256": m["sha256"], "key": keys[lang], "split_seed": d.split_seed,
                      "val_fraction": d.val_fraction} | ({} if m["sha256"] else {"source_key": m["source_key"]}),
            ))
    if builds:
        build_languages(d, builds, home / "work", progress)

    tokens: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    per_lang: dict[str, Any] = {}
    bpt: dict[str, float] = {}
    short: list[str] = []
    need = cfg.model.seq_len + 1
    for lang in langs:
        m = corpora[lang]
        base = shard_base(home, tok.hash, lang, keys[lang])
        entry: dict[str, Any] = {k: m[k] for k in ("source", "documents", "bytes", "sha256")}
        for split in SPLITS:
            header = shards.read_header(base, split)
            tokens[split][lang] = shards.open_shard(base, split)
            entry[split] = {k: header[k] for k in ("count", "documents", "bytes", "sha256", "dtype")}
            entry[split]["path"] = str(shards.shard_paths(base, split)[0])
            if header["count"] < need:
                short.append(f"language {lang!r}: {split} split has {header['count']} tokens, fewer than one "
                             f"sequence (model.seq_len + 1 = {need})")
        if src.direct:  # no corpus manifest: what the shards hold
            entry.update(documents=entry["train"]["documents"] + entry["val"]["documents"],
                         bytes=entry["train"]["bytes"] + entry["val"]["bytes"], source_key=m["source_key"])
        bpt[lang] = entry["val"]["bytes"] / max(1, entry["val"]["count"])
        entry["bytes_per_token"] = bpt[lang]
        per_lang[lang] = entry
    if short:
        raise DataError("\n  ".join(["too little data:", *short,
                                     "lower model.seq_len or add data (more text, a larger data.val_fraction, "
                                     "or data.synthetic_bytes for source=synthetic)"]))
    manifest = {
        "source": d.source,
        "source_key": corpora[langs[0]]["source_key"],
        "build_tasks": tasks,
        "home": str(home),
        "split": {"seed": d.split_seed, "val_fraction": d.val_fraction},
        "tokenizer": {"path": tok_path, "hash": tok.hash, "vocab_size": tok.vocab_size, "eot_id": tok.eot_id,
                      "eot_token": d.eot_token, **tok_info},
        "languages": per_lang,
    }
    return PreparedData(
        tokenizer_path=tok_path,
        vocab_size=tok.vocab_size,
        eot_id=tok.eot_id,
        train=tokens["train"],
        val=tokens["val"],
        bytes_per_token=bpt,
        manifest=manifest,
    )

