"""Corpus sources behind one interface: each yields documents (str) for a language.

Sources (README, "Data"): ``debian-docs`` (translated LibreOffice help from Debian
packages; the offline default), ``local`` (a directory per language), ``hf`` (Hugging Face
``datasets``) and ``synthetic`` (generated languages for tests and fast experiments).
Modules are imported on first use, so that ``datasets`` is only imported by the hf source.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from plasticlm.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.config import DataConfig

_REGISTRY = {
    "debian-docs": "plasticlm.data.sources.debian:DebianDocsSource",
    "local": "plasticlm.data.sources.local:LocalSource",
    "hf": "plasticlm.data.sources.hf:HFSource",
    "synthetic": "plasticlm.data.sources.synthetic:SyntheticSource",
}
SOURCE_NAMES = tuple(_REGISTRY)


class Source:
    """One corpus source. Use as a context manager: ``open`` before, ``close`` after ``documents``.

    The corpus builder calls ``open(langs, reuse)`` once with the languages it will build (a source
    may batch work there, e.g. one ``apt-get download``), then ``documents(lang)`` and
    ``provenance(lang)`` for each. ``reuse`` maps languages already in the cache to their docs.jsonl.
    """

    name: ClassVar[str] = ""
    direct: ClassVar[bool] = False
    """True when token shards are built from the source in place (text already on disk, or streamed), without
    a docs.jsonl copy; False for sources extracted into the corpus cache first (build.py)."""
    references: ClassVar[tuple[str, ...]] = ()
    """Languages this source reads to build others (offered from the cache through ``open``'s reuse)."""

    def __init__(self, data: DataConfig):
        self.data = data

    def key(self) -> str:
        """The cache directory name: it changes whenever the documents this source yields would change."""
        return self.name

    def settings(self) -> dict[str, Any]:
        """Settings recorded in every manifest of this source."""
        return {}

    def language_problems(self, langs: list[str]) -> list[str]:
        """What stops this source from serving ``langs``, known without reading any data ([] = none)."""
        return []

    def open(self, langs: list[str], reuse: dict[str, Path], progress: bool = True) -> None:  # noqa: B027
        """Prepare to build ``langs`` (no-op by default)."""

    def documents(self, lang: str) -> Iterator[str]:
        raise NotImplementedError

    def task_documents(self, lang: str, task: int, tasks: int) -> Iterator[str]:
        """Documents of slice ``task`` of ``tasks`` (disjoint slices covering the language), streamed.
        Default: every ``tasks``-th document; direct sources split by files and byte ranges or shards."""
        for i, doc in enumerate(self.documents(lang)):
            if i % tasks == task:
                yield doc

    def provenance(self, lang: str) -> dict[str, Any]:
        """Where ``lang``'s documents came from (package versions, files, replacements); after documents()."""
        return {}

    def close(self) -> None:  # noqa: B027
        """Release temporary files (no-op by default)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_source(data: DataConfig, name: str | None = None) -> Source:
    """The source named ``name`` (default ``data.source``) configured from ``data``."""
    name = name or data.source
    if name not in _REGISTRY:
        raise DataError(f"unknown corpus source {name!r}: choose one of {', '.join(SOURCE_NAMES)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)(data)
