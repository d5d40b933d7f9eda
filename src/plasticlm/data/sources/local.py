"""Local files: ``data.local_dir/<lang>/`` holds .txt, .jsonl and .parquet files (data-sources.md, 2).

- ``.txt``: with ``data.local_txt_docs = "paragraphs"`` (default) documents are separated by blank
  lines, so one large text file still gives many documents to split into train and validation;
  with ``"file"`` each file is one document.
- ``.jsonl``: one JSON object per line with a string field ``text`` (other fields ignored).
- ``.parquet``: a string column ``text``.
Files are read recursively in sorted path order, streamed (a line or a record batch at a time).
Invalid UTF-8 in .txt/.jsonl is replaced by U+FFFD and reported with a warning naming the file and the
number of replacements. Token shards are built from these files in place (``direct``): the build's
tasks take units round-robin, a unit being a ``UNIT_BYTES`` byte range of a .jsonl file (lines that
start in it), a row group of a .parquet file, or a whole .txt file.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from plasticlm.data.paths import stable_hash
from plasticlm.data.sources import Source
from plasticlm.data.text import decode_utf8, iter_paragraphs
from plasticlm.errors import DataError, DataWarning

EXTENSIONS = (".txt", ".jsonl", ".parquet")
TEXT_FIELD = "text"
UNIT_BYTES = 32 << 20


class LocalSource(Source):
    """Documents from files under ``data.local_dir/<lang>/``."""

    name = "local"
    direct = True

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

    def _files_or_error(self, lang: str) -> list[Path]:
        files = self.files(lang)
        if not files:
            raise DataError(
                f"language {lang!r}: {self.root / lang} has no {', '.join(EXTENSIONS)} files; add data or drop "
                "the language"
            )
        self._stats[lang] = {"files": len(files), "replacements": 0}
        return files

    def units(self, lang: str) -> list[tuple[Path, int, int]]:
        """(file, start, end) work units: byte ranges of .jsonl, row groups of .parquet, whole .txt files."""
        out = []
        for path in self._files_or_error(lang):
            ext = path.suffix.lower()
            if ext == ".jsonl":
                size = path.stat().st_size
                n = max(1, math.ceil(size / UNIT_BYTES))
                out += [(path, size * k // n, size * (k + 1) // n) for k in range(n)]
            elif ext == ".parquet":
                out += [(path, g, g + 1) for g in range(pq.ParquetFile(path).metadata.num_row_groups)]
            else:
                out.append((path, 0, -1))
        return out

    def documents(self, lang: str) -> Iterator[str]:
        for unit in self.units(lang):
            yield from self._unit_documents(lang, unit)

    def task_documents(self, lang: str, task: int, tasks: int) -> Iterator[str]:
        for i, unit in enumerate(self.units(lang)):
            if i % tasks == task:
                yield from self._unit_documents(lang, unit)

    def _unit_documents(self, lang: str, unit: tuple[Path, int, int]) -> Iterator[str]:
        path, start, end = unit
        ext = path.suffix.lower()
        if ext == ".parquet":
            yield from _parquet_docs(path, lang, start)
            return
        bad = [0]

        def decode(raw: bytes) -> str:
            text, n = decode_utf8(raw)
            bad[0] += n
            return text

        if ext == ".jsonl":
            yield from _jsonl_docs(path, lang, start, end, decode)
        elif self.data.local_txt_docs == "file":
            yield decode(path.read_bytes())
        else:
            yield from iter_paragraphs(line for _, raw in _lines(path, 0, -1) for line in decode(raw).splitlines())
        if bad[0]:
            stats = self._stats.setdefault(lang, {"replacements": 0})
            stats["replacements"] = stats.get("replacements", 0) + bad[0]
            warnings.warn(f"language {lang!r}: {path}: {bad[0]} invalid UTF-8 sequence(s) replaced with U+FFFD",
                          DataWarning, stacklevel=2)

    def provenance(self, lang: str) -> dict[str, Any]:
        return {"dir": str(self.root / lang), **self._stats.get(lang, {})}


def _lines(path: Path, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(line number in the range, raw line) of the lines that start in [start, end) (end -1 = to EOF)."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the line holding byte start-1 belongs to the previous range
        n = 0
        while end < 0 or f.tell() < end:
            raw = f.readline()
            if not raw:
                return
            n += 1
            yield n, raw


def _jsonl_docs(path: Path, lang: str, start: int, end: int, decode) -> Iterator[str]:
    for n, raw in _lines(path, start, end):
        line = decode(raw)
        if not line.strip():
            continue
        where = f"{path}:{n}" if start == 0 else f"{path} (line {n} after byte {start})"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"language {lang!r}: {where}: not valid JSON ({e.msg})") from e
        value = obj.get(TEXT_FIELD) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            raise DataError(f"language {lang!r}: {where}: expected an object with a string field {TEXT_FIELD!r}")
        yield value


def _parquet_docs(path: Path, lang: str, row_group: int) -> Iterator[str]:
    pf = pq.ParquetFile(path)
    if TEXT_FIELD not in pf.schema_arrow.names:
        raise DataError(
            f"language {lang!r}: {path}: no column {TEXT_FIELD!r} (columns: {', '.join(pf.schema_arrow.names)})"
        )
    for batch in pf.iter_batches(columns=[TEXT_FIELD], batch_size=1024, row_groups=[row_group]):
        for value in batch.column(0).to_pylist():
            if value is not None:
                yield value
