"""Tokenizers: a byte-level BPE trained here, raw bytes, or any tokenizer.json (data-sources.md, "Tokenizers").

- ``data.tokenizer = "bpe"`` (default): a byte-level BPE (GPT-2 pre-tokenizer regex, no normalizer,
  lossless) trained with Hugging Face ``tokenizers`` on equal-sized samples of every language,
  the probe language included (the paper's Qwen3 tokenizer also saw Vietnamese; training the
  tokenizer on probe text is not training the model on it). ``data.vocab_size`` includes the one
  special token, ``data.eot_token`` (id 0), which separates documents. Cached under
  ``tokenizers/<key16>/`` where the key hashes the training inputs (the corpora's sha256, the split
  settings, the sample size) and the settings.
- ``"bytes"``: ids 0..255 are the UTF-8 bytes, 256 is the end-of-document token (vocabulary 257).
- a path to a ``tokenizer.json`` (e.g. Qwen3's): must contain ``data.eot_token`` as a token.
A tokenizer's identity (``hash``) is the sha256 of its tokenizer.json ("bytes-v1" for bytes): the
token shards are keyed by it.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tokenizers import Tokenizer as HFTok
from tokenizers import decoders, models, pre_tokenizers, trainers

from plasticlm.data.paths import read_cached_json, stable_hash, tokenizer_dir
from plasticlm.errors import DataError
from plasticlm.runlog import atomic_write_bytes, atomic_write_json

BYTES = "bytes"
BPE_VERSION = 1


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0..255) plus one end-of-document token (256)."""

    path = BYTES
    hash = "bytes-v1"
    vocab_size = 257
    eot_id = 256

    def __init__(self, eot_token: str = "<|endoftext|>"):
        self.eot_token = eot_token

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; each end-of-document token is rendered as ``eot_token``."""
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        cuts = np.flatnonzero(arr == self.eot_id)
        parts, start = [], 0
        for c in [*cuts.tolist(), len(arr)]:
            parts.append(arr[start:c].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
            start = c + 1
        return self.eot_token.join(parts)


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer loaded from a tokenizer.json."""

    def __init__(self, path: str | Path, eot_token: str = "<|endoftext|>"):
        self.path = str(path)
        raw = Path(path).read_bytes()
        self.hash = hashlib.sha256(raw).hexdigest()
        self.tok = HFTok.from_str(raw.decode("utf-8"))
        # Text that happens to contain the special token's string is encoded as plain text.
        self.tok.encode_special_tokens = True
        eot = self.tok.token_to_id(eot_token)
        if eot is None:
            specials = [t.content for t in self.tok.get_added_tokens_decoder().values()]
            raise DataError(
                f"tokenizer {path} has no end-of-document token {eot_token!r}; set data.eot_token to one of its "
                f"special tokens: {', '.join(specials[:20]) or '(none)'}"
            )
        self.eot_token = eot_token
        self.eot_id = int(eot)
        self.vocab_size = int(self.tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; each end-of-document token is rendered as ``eot_token``."""
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


Tokenizer = ByteTokenizer | HFTokenizer


def load_tokenizer(path: str | Path, eot_token: str = "<|endoftext|>") -> Tokenizer:
    """``"bytes"`` or a tokenizer.json path -> an object with encode, encode_batch, decode, eot_id, vocab_size."""
    if str(path) == BYTES:
        return ByteTokenizer(eot_token)
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"tokenizer file {p} does not exist: set data.tokenizer to 'bpe', 'bytes' or a tokenizer.json")
    return HFTokenizer(p, eot_token)


def train_bpe(texts: Iterable[str], vocab_size: int, eot_token: str) -> Any:
    """Train a byte-level BPE; returns a ``tokenizers.Tokenizer``."""

    if vocab_size < 257:
        raise DataError(f"data.vocab_size = {vocab_size}: a byte-level BPE needs >= 257 (256 bytes + the special)")
    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[eot_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def take_bytes(docs: Iterable[str], n_bytes: int) -> list[str]:
    """Documents in order until ``n_bytes`` UTF-8 bytes; the last one cut at a character boundary."""
    out, total = [], 0
    for doc in docs:
        raw = doc.encode("utf-8")
        if total + len(raw) >= n_bytes:
            out.append(raw[: n_bytes - total].decode("utf-8", errors="ignore"))
            break
        out.append(doc)
        total += len(raw)
    return out


def bpe_key(vocab_size: int, eot_token: str, inputs: dict[str, Any], sample_bytes: int) -> str:
    """Cache key of a trained BPE: settings plus the identity of its training text."""

    return stable_hash({
        "kind": "bpe-bytelevel",
        "version": BPE_VERSION,
        "tokenizers": tokenizers.__version__,
        "vocab_size": vocab_size,
        "eot_token": eot_token,
        "sample_bytes": sample_bytes,
        "inputs": inputs,
    })


def cached_bpe(home: Path, key: str) -> Path | None:
    d = tokenizer_dir(home, key)
    meta = read_cached_json(d / "meta.json")
    return d / "tokenizer.json" if meta and meta.get("key") == key and (d / "tokenizer.json").is_file() else None


def build_bpe(
    home: Path, key: str, samples: dict[str, list[str]], vocab_size: int, eot_token: str, progress: bool = True
) -> Path:
    """Train on ``samples`` (lang -> documents) and cache as tokenizers/<key16>/tokenizer.json (+ meta.json)."""
    t0 = time.perf_counter()
    if progress:
        total = sum(len(d.encode("utf-8")) for docs in samples.values() for d in docs)
        print(f"plasticlm: training a {vocab_size}-token byte-level BPE on {total / 1e6:.1f} MB "
              f"({len(samples)} languages)", file=sys.stderr)
    tok = train_bpe((d for lang in sorted(samples) for d in samples[lang]), vocab_size, eot_token)
    d = tokenizer_dir(home, key)
    atomic_write_bytes(d / "tokenizer.json", tok.to_str().encode("utf-8"))
    atomic_write_json(d / "meta.json", {
        "key": key,
        "vocab_size": tok.get_vocab_size(),
        "eot_token": eot_token,
        "sample_bytes": {lang: sum(len(x.encode("utf-8")) for x in docs) for lang, docs in sorted(samples.items())},
        "train_seconds": round(time.perf_counter() - t0, 2),
    })
    return d / "tokenizer.json"
