"""The cache under ``$PLASTICLM_HOME`` and stable hashes.

Layout (every file is written atomically with ``plasticlm.runlog``'s helpers: a temporary file in
the same directory, then ``os.replace``, so an interrupted build never leaves a half-written file
under its final name)::

    $PLASTICLM_HOME/                       (config data.home, else $PLASTICLM_HOME, else ~/.cache/plasticlm)
      corpus/<source-key>/<lang>/docs.jsonl     one JSON string (a document) per line
      corpus/<source-key>/<lang>/manifest.json  documents, bytes, sha256 of docs.jsonl, provenance
      tokenizers/<hash16>/tokenizer.json        trained byte-level BPE, with meta.json
      tokens/<tokenizer16>/<lang>/<key16>.{train,val}.{bin,json}   token shards and their headers

Each entry is built under a file lock (``plasticlm.cachelock.cache_lock``): ``corpus/<source-key>/.lock``,
``tokenizers/<hash16>.lock`` and, beside the shard build's task files,
``work/<tokenizer16>/<lang>/<key16>.lock``. A second process that needs the same entry at the same
time waits, then finds it complete and reads it: two builds never write one entry at once, and it is
built once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

ENV_HOME = "PLASTICLM_HOME"


def home_dir(configured: str = "") -> Path:
    """The cache root: ``configured`` (config ``data.home``), else $PLASTICLM_HOME, else ~/.cache/plasticlm."""
    raw = configured or os.environ.get(ENV_HOME) or os.path.join("~", ".cache", "plasticlm")
    return Path(raw).expanduser().resolve()


def corpus_dir(home: Path, source_key: str, lang: str) -> Path:
    return home / "corpus" / source_key / lang


def tokenizer_dir(home: Path, tok_hash: str) -> Path:
    return home / "tokenizers" / tok_hash[:16]


def shard_base(home: Path, tok_hash: str, lang: str, key: str) -> Path:
    """Shards are ``<base>.train.bin`` etc.; ``key`` covers the corpus, tokenizer and split settings."""
    return home / "tokens" / tok_hash[:16] / lang / key[:16]


def read_cached_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (a cache miss, never an error)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def stable_hash(obj: Any) -> str:
    """sha256 hex of a canonical JSON encoding: the same settings give the same key on any machine."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


def lang_seed(seed: int, lang: str, purpose: str) -> list[int]:
    """A numpy seed sequence from an integer seed, a language code and a purpose (never Python's hash())."""
    digest = hashlib.sha256(f"{purpose}/{lang}".encode()).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]
