"""Local files: ``data.local_dir/<lang>/`` holds .txt, .jsonl and .parquet files (data-sources.md, 2).

- ``.txt``: with ``data.local_txt_docs = "paragraphs"`` (default) documents are separated by blank
  lines, so one large text file still gives many documents to split into train and validation;
  with ``"file"`` each file is one document.
- ``.jsonl``: one JSON object per line with a string field ``text`` (other fields ignored).
- ``.parquet``: a string column ``text``.
Files are read recursively in sorted path order. Invalid UTF-8 in .txt/.jsonl is replaced by U+FFFD
and reported with a warning naming the file and the number of replacements.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plasticlm.data.paths import stable_hash
from plasticlm.data.sources import Source
from plasticlm.data.text import blank_line_paragraphs, decode_utf8
from plasticlm.errors import DataError, DataWarning

EXTENSIONS = (".txt", ".jsonl", ".parquet")
TEXT_FIELD = "text"


class LocalSource(Source):
    """Documents from files under ``data.local_dir/<lang>/``."""

    name = "local"

    def __init__(self, data):
        super().__init__(data)
        if not data.local_dir:
            raise DataError("source 'local' needs data.local_dir: --set data.local_dir=DIR (a sub-dir per language)")
        self.root = Path(data.local_dir).expanduser().resolve()
        self._stats: dict[str, dict[str, Any]] = {}

    def language_problems(self, langs: list[str]) -> list[str]:
        # Only the root: `corpus build --langs` may build a subset, so a missing <lang>/ is found when it is read.
        if not self.root.is_dir():
            return [f"data.local_dir = {self.data.local_dir!r}: no such directory (source 'local' wants "
                    f"data.local_dir/<lang>/ with {', '.join(EXTENSIONS)} files for every language)"]
        return []

    def files(self, lang: str) -> list[Path]:
        d = self.root / lang
        if not d.is_dir():
            raise DataError(
                f"language {lang!r}: no directory {d} (source 'local' wants data.local_dir/<lang>/ with "
                f"{', '.join(EXTENSIONS)} files); add it or drop the language"
            )
        return sorted((p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS), key=str)

    def settings(self) -> dict[str, Any]:
        return {"local_dir": str(self.root), "txt_docs": self.data.local_txt_docs}

    def key(self) -> str:
        """Changes whenever a file under local_dir is added, removed, resized or touched."""
        entries = []
        for lang_dir in sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []:
            for p in sorted(lang_dir.rglob("*"), key=str):
                if p.is_file() and p.suffix.lower() in EXTENSIONS:
                    st = p.stat()
                    entries.append([str(p.relative_to(self.root)), st.st_size, st.st_mtime_ns])
        return f"local-{stable_hash([self.settings(), entries])[:12]}"

    def documents(self, lang: str) -> Iterator[str]:
        files = self.files(lang)
        if not files:
            raise DataError(
                f"language {lang!r}: {self.root / lang} has no {', '.join(EXTENSIONS)} files; add data or drop "
                "the language"
            )
        stats = self._stats[lang] = {"files": len(files), "replacements": 0}
        for path in files:
            ext = path.suffix.lower()
            if ext == ".parquet":
                yield from _parquet_docs(path, lang)
                continue
            text, bad = decode_utf8(path.read_bytes())
            if bad:
                stats["replacements"] += bad
                warnings.warn(
                    f"language {lang!r}: {path}: {bad} invalid UTF-8 sequence(s) replaced with U+FFFD",
                    DataWarning,
                    stacklevel=2,
                )
            if ext == ".txt":
                if self.data.local_txt_docs == "file":
                    yield text
                else:
                    yield from blank_line_paragraphs(text)
            else:
                yield from _jsonl_docs(text, path, lang)

    def provenance(self, lang: str) -> dict[str, Any]:
        return {"dir": str(self.root / lang), **self._stats.get(lang, {})}


def _jsonl_docs(text: str, path: Path, lang: str) -> Iterator[str]:
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"language {lang!r}: {path}:{i}: not valid JSON ({e.msg})") from e
        value = obj.get(TEXT_FIELD) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            raise DataError(f"language {lang!r}: {path}:{i}: expected an object with a string field {TEXT_FIELD!r}")
        yield value


def _parquet_docs(path: Path, lang: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if TEXT_FIELD not in pf.schema_arrow.names:
        raise DataError(
            f"language {lang!r}: {path}: no column {TEXT_FIELD!r} (columns: {', '.join(pf.schema_arrow.names)})"
        )
    for batch in pf.iter_batches(columns=[TEXT_FIELD], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if value is not None:
                yield value

