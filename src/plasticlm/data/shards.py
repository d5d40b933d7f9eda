"""Token shards: one flat array of token ids per language and split, memory-mapped.

``<base>.<split>.bin`` holds the documents' ids, each document followed by the end-of-document
token, as ``uint16`` when the vocabulary fits (else ``uint32``), native little-endian.
``<base>.<split>.json`` is its header: format, dtype, count, vocab_size, eot_id, documents, bytes
(UTF-8 bytes of the text, separators excluded), tokenizer_hash, sha256 (of the .bin) and the keys
it was built from. Both are written atomically and the header last (by ``build.merge_split``), so a
shard without a header, or whose size disagrees with it, is a cache miss and gets rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plasticlm.data.paths import read_cached_json
from plasticlm.data.tokenizer import Tokenizer

FORMAT = 1


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def shard_paths(base: Path, split: str) -> tuple[Path, Path]:
    return base.with_name(f"{base.name}.{split}.bin"), base.with_name(f"{base.name}.{split}.json")


def encode_documents(tok: Tokenizer, docs: Sequence[str], dtype: np.dtype) -> np.ndarray:
    """Ids of ``docs``, each followed by the end-of-document token, as one array."""
    seqs = tok.encode_batch(docs)
    out = np.empty(sum(len(s) for s in seqs) + len(seqs), dtype=dtype)
    pos = 0
    for s in seqs:
        n = len(s)
        out[pos : pos + n] = s
        out[pos + n] = tok.eot_id
        pos += n + 1
    return out


def read_header(base: Path, split: str) -> dict[str, Any] | None:
    """The header of a complete shard, or None."""
    bin_path, header_path = shard_paths(base, split)
    header = read_cached_json(header_path)
    if not header or header.get("format") != FORMAT or not bin_path.is_file():
        return None
    if bin_path.stat().st_size != header["count"] * np.dtype(header["dtype"]).itemsize:
        return None
    return header


def open_shard(base: Path, split: str) -> np.ndarray:
    """The shard's tokens as a read-only memory map (1-D, the header's dtype)."""
    header = read_header(base, split)
    if header is None:
        raise FileNotFoundError(f"no complete shard at {shard_paths(base, split)[0]}")
    bin_path = shard_paths(base, split)[0]
    if header["count"] == 0:
        return np.zeros(0, dtype=np.dtype(header["dtype"]))
    return np.memmap(bin_path, dtype=np.dtype(header["dtype"]).newbyteorder("<"), mode="r", shape=(header["count"],))
