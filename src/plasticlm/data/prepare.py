"""corpus -> split -> tokenizer -> token shards: what the stream and the trainer read.

``prepare_data(cfg)`` builds whatever is missing from the cache and returns memory-mapped token
arrays per language and split. Everything is keyed by content: the corpus by its sha256, the BPE by
its training inputs, the shards by (corpus sha256, tokenizer hash, split seed and fraction), so a
second call only reads manifests and headers.

The tokenizer is trained on the config's languages (``stream.languages`` + ``probe.language``
(+ ``stream.permuted_base``)) plus any other requested language, whichever languages a call asks
for: ``prepare_data(cfg, ["vi"])`` uses the same tokenizer as ``prepare_data(cfg)``.

Bytes per token (for bits per byte, style.md 8): UTF-8 bytes of a language's validation text divided
by its validation token count, end-of-document tokens included; ``bpb = loss_nats / ln 2 / bytes_per_token``
(``plasticlm.evaluate.bits_per_byte``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from plasticlm.data import shards
from plasticlm.data.corpus import build_corpus, iter_documents
from plasticlm.data.paths import home_dir, shard_base, stable_hash
from plasticlm.data.splits import split_documents
from plasticlm.data.tokenizer import BYTES, bpe_key, build_bpe, cached_bpe, load_tokenizer, take_bytes
from plasticlm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from plasticlm.config import Config

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
    """stream.languages + probe.language (+ stream.permuted_base for the permuted stream), without repeats."""
    langs = [*cfg.stream.languages, cfg.probe.language]
    if cfg.stream.kind == "permuted" and cfg.stream.permuted_base:
        langs.append(cfg.stream.permuted_base)
    return list(dict.fromkeys(langs))


class _Docs:
    """Lazily loaded, split documents per language (only read when something must be built)."""

    def __init__(self, cfg: Config, corpora: dict[str, dict[str, Any]]):
        self.cfg, self.corpora = cfg, corpora
        self._cache: dict[str, tuple[list[str], list[str]]] = {}

    def split(self, lang: str) -> tuple[list[str], list[str]]:
        if lang not in self._cache:
            docs = list(iter_documents(Path(self.corpora[lang]["path"])))
            d = self.cfg.data
            self._cache[lang] = split_documents(docs, lang, d.split_seed, d.val_fraction)
        return self._cache[lang]


def _tokenizer(cfg: Config, corpora: dict[str, dict[str, Any]], docs: _Docs, progress: bool) -> tuple[str, dict]:
    """Path of the tokenizer to use (trained and cached when data.tokenizer = 'bpe'), and its training info."""
    d = cfg.data
    if d.tokenizer == BYTES:
        return BYTES, {"kind": "bytes"}
    if d.tokenizer != "bpe":
        return str(Path(d.tokenizer).expanduser().resolve()), {"kind": "file"}
    # Equal-sized samples (data-sources.md): the size is fixed from the manifests alone, so the cache
    # key is known without reading any text: the smaller of the setting and the smallest training split.
    train_bytes = {lang: int(m["bytes"] * (1.0 - d.val_fraction)) for lang, m in corpora.items()}
    sample = max(1, min(d.tokenizer_sample_bytes, *train_bytes.values()))
    inputs = {lang: [m["sha256"], d.split_seed, d.val_fraction] for lang, m in sorted(corpora.items())}
    key = bpe_key(d.vocab_size, d.eot_token, inputs, sample)
    info = {"kind": "bpe", "key": key, "languages": sorted(corpora), "sample_bytes_per_language": sample}
    path = cached_bpe(home_dir(d.home), key)
    if path is None:
        samples = {lang: take_bytes(docs.split(lang)[0], sample) for lang in corpora}
        path = build_bpe(home_dir(d.home), key, samples, d.vocab_size, d.eot_token, progress)
    return str(path), info


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
    corpora = build_corpus(d, all_langs, progress=progress)
    docs = _Docs(cfg, corpora)
    tok_path, tok_info = _tokenizer(cfg, corpora, docs, progress)
    tok = load_tokenizer(tok_path, d.eot_token)
    if cfg.model.vocab_size and cfg.model.vocab_size < tok.vocab_size:
        raise DataError(
            f"model.vocab_size = {cfg.model.vocab_size} is smaller than the tokenizer's {tok.vocab_size} tokens "
            f"({tok_path}); set model.vocab_size = 0 (take it from the tokenizer) or >= {tok.vocab_size}"
        )

    home = home_dir(d.home)
    tokens: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    per_lang: dict[str, Any] = {}
    bpt: dict[str, float] = {}
    short: list[str] = []
    need = cfg.model.seq_len + 1
    keys = {lang: stable_hash({"format": shards.FORMAT, "corpus": corpora[lang]["sha256"], "tokenizer": tok.hash,
                               "split_seed": d.split_seed, "val_fraction": d.val_fraction, "lang": lang})
            for lang in langs}
    missing = [lang for lang in langs if any(shards.read_header(shard_base(home, tok.hash, lang, keys[lang]), s) is None
                                             for s in SPLITS)]
    bar = tqdm(total=sum(corpora[lang]["bytes"] for lang in missing), desc="tokenize", unit="B", unit_scale=True,
               file=sys.stderr, disable=not (progress and missing))
    for lang in langs:
        m = corpora[lang]
        base = shard_base(home, tok.hash, lang, keys[lang])
        entry: dict[str, Any] = {k: m[k] for k in ("source", "documents", "bytes", "sha256")}
        for i, split in enumerate(SPLITS):
            header = shards.read_header(base, split)
            if header is None:
                bar.set_postfix_str(f"{lang} {split}")
                meta = {"lang": lang, "corpus_sha256": m["sha256"], "key": keys[lang],
                        "split_seed": d.split_seed, "val_fraction": d.val_fraction}
                header = shards.write_shard(base, split, docs.split(lang)[i], tok, meta, bar)
            tokens[split][lang] = shards.open_shard(base, split)
            entry[split] = {k: header[k] for k in ("count", "documents", "bytes", "sha256", "dtype")}
            entry[split]["path"] = str(shards.shard_paths(base, split)[0])
            if header["count"] < need:
                short.append(f"language {lang!r}: {split} split has {header['count']} tokens, fewer than one "
                             f"sequence (model.seq_len + 1 = {need})")
        bpt[lang] = entry["val"]["bytes"] / max(1, entry["val"]["count"])
        entry["bytes_per_token"] = bpt[lang]
        per_lang[lang] = entry
    bar.close()
    if short:
        raise DataError("\n  ".join(["too little data:", *short,
                                     "lower model.seq_len or add data (more text, a larger data.val_fraction, "
                                     "or data.synthetic_bytes for source=synthetic)"]))
    manifest = {
        "source": d.source,
        "source_key": corpora[langs[0]]["source_key"],
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

