"""Build and cache each language's documents from a source, with a manifest per language.

Cache: ``$PLASTICLM_HOME/corpus/<source-key>/<lang>/docs.jsonl`` (one JSON string per line, in the
source's order) and ``manifest.json``: source, settings, provenance (for debian-docs the package
name and version), documents, bytes (UTF-8 bytes of the text) and ``sha256`` of docs.jsonl
(``sha256sum docs.jsonl`` reproduces it). For every source, whitespace-only documents and exact
repeats of an earlier document are dropped (so that train and validation never share a document
text), and ``data.max_bytes_per_language`` caps the text (documents are taken in order until the
cap is reached). The manifest is written last: a directory without one is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from plasticlm.cachelock import cache_lock
from plasticlm.config import DataConfig
from plasticlm.data.paths import corpus_dir, home_dir, read_cached_json
from plasticlm.data.sources import Source, make_source
from plasticlm.errors import DataError
from plasticlm.runlog import atomic_path, atomic_write_json

FORMAT = 1
DOCS = "docs.jsonl"
MANIFEST = "manifest.json"


def iter_documents(path: Path) -> Iterator[str]:
    """Documents of a docs.jsonl file, in order. (Never str.splitlines: it also splits on U+2028.)"""
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            yield json.loads(line)


def load_documents(data: DataConfig, lang: str, source: str | None = None) -> list[str]:
    """All documents of a built language (raises DataError naming the build command if missing)."""
    m = read_manifest(data, lang, source)
    if m is None:
        raise DataError(f"language {lang!r}: no corpus built for source {source or data.source!r}; run `plasticlm "
                        f"corpus build --langs {lang}`")
    return list(iter_documents(Path(m["path"])))


def source_root(data: DataConfig, src: Source) -> Path:
    return corpus_dir(home_dir(data.home), src.key(), "_").parent


def read_manifest(data: DataConfig, lang: str, source: str | Source | None = None) -> dict[str, Any] | None:
    """The manifest of a complete cached language, or None (missing, partial or stale format)."""
    src = source if isinstance(source, Source) else make_source(data, source)
    d = source_root(data, src) / lang
    m = read_cached_json(d / MANIFEST)
    docs = d / DOCS
    if not m or m.get("format") != FORMAT or not docs.is_file() or docs.stat().st_size != m.get("file_bytes"):
        return None
    m["path"] = str(docs)
    return m


def _clean(docs: Iterable[str], cap: int, stats: dict[str, int]) -> Iterator[str]:
    seen: set[bytes] = set()
    total = 0
    for doc in docs:
        if not doc.strip():
            stats["empty_dropped"] += 1
            continue
        digest = hashlib.blake2b(doc.encode("utf-8"), digest_size=16).digest()
        if digest in seen:
            stats["duplicates_dropped"] += 1
            continue
        seen.add(digest)
        yield doc
        total += len(doc.encode("utf-8"))
        if 0 < cap <= total:
            stats["capped"] = 1
            return


def _write_language(src: Source, lang: str, d: Path, cap: int, bar: tqdm) -> dict[str, Any]:
    stats = {"empty_dropped": 0, "duplicates_dropped": 0, "capped": 0}
    h = hashlib.sha256()
    n_docs = n_bytes = file_bytes = 0
    bar.set_postfix_str(lang)
    with atomic_path(d / DOCS) as tmp, open(tmp, "wb") as f:
        for doc in _clean(src.documents(lang), cap, stats):
            line = (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            h.update(line)
            n_docs += 1
            n_bytes += len(doc.encode("utf-8"))
            file_bytes += len(line)
            bar.update()
    if n_docs == 0:
        (d / DOCS).unlink(missing_ok=True)
        raise DataError(f"language {lang!r}: source {src.name!r} gave no documents (empty data); add data or drop it")
    manifest = {
        "format": FORMAT,
        "lang": lang,
        "source": src.name,
        "source_key": src.key(),
        "settings": src.settings(),
        "provenance": src.provenance(lang),
        "documents": n_docs,
        "bytes": n_bytes,
        "sha256": h.hexdigest(),
        "file_bytes": file_bytes,
        "max_bytes": cap,
        "capped": bool(stats.pop("capped")),
        **stats,
    }
    atomic_write_json(d / MANIFEST, manifest)
    manifest["path"] = str(d / DOCS)
    return manifest


def build_corpus(
    data: DataConfig, langs: list[str], source: str | None = None, force: bool = False, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Build the languages missing from the cache (all of them with ``force``); returns lang -> manifest."""
    src = make_source(data, source)
    root = source_root(data, src)
    langs = list(dict.fromkeys(langs))
    manifests: dict[str, dict[str, Any]] = {}

    def missing() -> list[str]:
        for lang in langs if not force else []:
            m = manifests.get(lang) or read_manifest(data, lang, src)
            if m is not None:
                manifests[lang] = m
        return [lang for lang in langs if lang not in manifests]

    if missing():
        with cache_lock(root / ".lock", f"the {src.name} corpus"):
            todo = missing()  # again: the process this one waited for may have built them
            if todo:
                _write_languages(src, data, todo, manifests, root, progress)
    return {lang: manifests[lang] for lang in langs}


def _write_languages(src: Source, data: DataConfig, todo: list[str], manifests: dict[str, dict[str, Any]],
                     root: Path, progress: bool) -> None:
    # Complete (uncapped) cached languages can serve as references (debian-docs: the English filter).
    reuse = {}
    for lang in dict.fromkeys([*manifests, *src.references]):
        m = manifests.get(lang) or read_manifest(data, lang, src)
        if lang not in todo and m is not None and not m["capped"]:
            reuse[lang] = Path(m["path"])
    bar = tqdm(desc=f"corpus {src.name}", unit="doc", file=sys.stderr, disable=not progress)
    with src, bar:
        src.open(todo, reuse, progress)
        for lang in todo:
            manifests[lang] = _write_language(src, lang, root / lang, data.max_bytes_per_language, bar)


def corpus_info(data: DataConfig, langs: list[str], source: str | None = None) -> list[dict[str, Any]]:
    """Per language: lang, source, built, documents, bytes, sha256 (and provenance when built)."""
    src = make_source(data, source)
    rows = []
    for lang in langs:
        m = read_manifest(data, lang, src)
        if m is None:
            rows.append({"lang": lang, "source": src.name, "built": False, "documents": 0, "bytes": 0, "sha256": ""})
            continue
        rows.append({
            "lang": lang,
            "source": m["source"],
            "built": True,
            "documents": m["documents"],
            "bytes": m["bytes"],
            "sha256": m["sha256"],
            "path": m["path"],
            "provenance": m["provenance"],
        })
    return rows
