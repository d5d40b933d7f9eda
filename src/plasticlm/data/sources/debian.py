"""The offline default: translated LibreOffice help from Debian packages (data-sources.md, 1).

``apt-get download libreoffice-help-<x>`` into a temporary directory (no install: installing would
pull in LibreOffice), ``dpkg-deb -x``, then the pages ``usr/share/libreoffice/help/<dir>/text/**/*.html``
(about 2,500 per language) in sorted path order. A page's visible help text (data/text.py) becomes
one document: its paragraphs joined by newlines. For every language but English, paragraphs that
occur verbatim in the English help (untranslated fallbacks) are dropped; in every language repeated
paragraphs are dropped after their first occurrence; pages left empty are dropped. The English help
is always extracted when another language is built, for that filter. Processing is deterministic,
so a rebuild from the same package versions gives the same sha256. Text: MPL-2.0 (parts Apache-2.0),
see NOTICE; it is built on the user's machine and never committed.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from plasticlm.data.corpus import iter_documents
from plasticlm.data.sources import Source
from plasticlm.data.text import filter_paragraphs, html_paragraphs
from plasticlm.errors import DataError

# Candidate packages per language, first available wins; any other code tries libreoffice-help-<code>.
PACKAGES: dict[str, list[str]] = {
    "en": ["libreoffice-help-en-us"],
    "zh": ["libreoffice-help-zh-cn"],
    "pt": ["libreoffice-help-pt-br", "libreoffice-help-pt"],
}
REFERENCE = "en"
DEBIAN_PACKAGES = (
    "ca", "cs", "da", "de", "dz", "el", "en-gb", "en-us", "es", "et", "eu", "fi", "fr", "gl", "hi", "hu", "id",
    "it", "ja", "km", "ko", "nl", "om", "pl", "pt", "pt-br", "ru", "sk", "sl", "sv", "tr", "vi", "zh-cn", "zh-tw",
)
"""The libreoffice-help-<x> packages of Debian 12 (`apt-cache search --names-only ^libreoffice-help-`);
the study's nine languages (en zh fr ja es de pt ru vi) are the measured ones (data-sources.md)."""
_ALTERNATIVES = (
    "use another source: --source local with data.local_dir=DIR (one sub-directory of .txt/.jsonl/.parquet "
    "files per language), or --source hf with data.hf_dataset=NAME"
)


def candidates(lang: str) -> list[str]:
    return PACKAGES.get(lang, [f"libreoffice-help-{lang.lower()}"])


def page_paragraphs(path: str | Path) -> list[str]:
    """Paragraphs of one help page; only the help body is parsed (the page chrome is skipped anyway)."""
    html = Path(path).read_bytes().decode("utf-8", errors="replace")
    start, end = html.find('<div id="DisplayArea"'), html.find("<footer")
    if 0 <= start < end:
        html = html[start:end]
    return html_paragraphs(html)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


class DebianDocsSource(Source):
    """LibreOffice help translations from Debian packages (needs apt-get and dpkg-deb, no install)."""

    name = "debian-docs"
    references = (REFERENCE,)

    def __init__(self, data):
        super().__init__(data)
        self._tmp: Path | None = None
        self._debs: dict[str, Path] = {}
        self._packages: dict[str, dict[str, str]] = {}
        self._pages: dict[str, list[list[str]]] = {}
        self._english: frozenset[str] | None = None
        self._stats: dict[str, dict[str, Any]] = {}
        self._progress = True
        self._updated = False

    def settings(self) -> dict[str, Any]:
        return {"packages": "libreoffice-help-*", "reference": REFERENCE, "filter": "english-fallback+dedup"}

    def language_problems(self, langs: list[str]) -> list[str]:
        known = {f"libreoffice-help-{x}" for x in DEBIAN_PACKAGES}
        bad = [lang for lang in langs if not any(p in known for p in candidates(lang))]
        if not bad:
            return []
        served = sorted({*PACKAGES, *DEBIAN_PACKAGES})
        return [f"language(s) {', '.join(map(repr, bad))}: source 'debian-docs' has no Debian package for "
                f"{'them' if len(bad) > 1 else 'it'} (it serves {' '.join(served)}; the study's nine are "
                f"en zh fr ja es de pt ru vi); change stream.languages / probe.language, or " + _ALTERNATIVES
                + ", or --source synthetic (any code)"]

    # -- apt ---------------------------------------------------------------------------------

    def _check_tools(self) -> None:
        missing = [t for t in ("apt-get", "apt-cache", "dpkg-deb") if shutil.which(t) is None]
        if missing:
            raise DataError(
                f"source 'debian-docs' needs Debian/Ubuntu's apt-get and dpkg-deb; not found: {', '.join(missing)}. "
                + _ALTERNATIVES
            )

    def _apt_update(self, why: str) -> None:
        if self._updated:
            return
        if os.geteuid() != 0:
            raise DataError(
                f"{why}; the apt package lists look empty or stale. Run `sudo apt-get update` and retry, or "
                + _ALTERNATIVES
            )
        print("plasticlm: running `apt-get update` (package lists are empty or stale)", file=sys.stderr)
        r = _run(["apt-get", "update"])
        self._updated = True
        if r.returncode != 0:
            raise DataError(f"`apt-get update` failed:\n{r.stderr.strip()}\n" + _ALTERNATIVES)

    def _resolve(self, langs: list[str]) -> dict[str, str]:
        """Language -> first available candidate package (apt-get update once if needed and allowed)."""
        for attempt in range(2):
            wanted = [p for lang in langs for p in candidates(lang)]
            r = _run(["apt-cache", "show", "--no-all-versions", *wanted])
            known = {line.split(":", 1)[1].strip() for line in r.stdout.splitlines() if line.startswith("Package:")}
            chosen = {lang: next((p for p in candidates(lang) if p in known), "") for lang in langs}
            missing = [lang for lang, p in chosen.items() if not p]
            if not missing:
                return chosen
            tried = "; ".join(f"{lang}: {', '.join(candidates(lang))}" for lang in missing)
            if attempt == 0:
                self._apt_update(f"Unable to locate package(s) ({tried})")
        raise DataError(
            f"no Debian package for language(s) {', '.join(missing)} (tried {tried}); drop them or " + _ALTERNATIVES
        )

    def _download(self, packages: list[str]) -> dict[str, Path]:
        assert self._tmp is not None
        dest = self._tmp / "debs"
        dest.mkdir(exist_ok=True)
        r = _run(["apt-get", "download", *packages], cwd=dest)
        if r.returncode != 0 and "Unable to locate package" in r.stderr:
            self._apt_update("apt-get download: " + r.stderr.strip().splitlines()[-1])
            r = _run(["apt-get", "download", *packages], cwd=dest)
        if r.returncode != 0:
            raise DataError(f"`apt-get download {' '.join(packages)}` failed:\n{r.stderr.strip()}\n" + _ALTERNATIVES)
        debs = {}
        for deb in sorted(dest.glob("*.deb")):
            pkg = _run(["dpkg-deb", "-f", str(deb), "Package"]).stdout.strip()
            debs[pkg] = deb
        lost = [p for p in packages if p not in debs]
        if lost:
            raise DataError(f"apt-get download did not produce {', '.join(lost)}")
        return debs

    # -- Source interface --------------------------------------------------------------------

    def open(self, langs: list[str], reuse: dict[str, Path], progress: bool = True) -> None:
        self._progress = progress
        if not langs:
            return
        self._check_tools()
        need = list(dict.fromkeys(langs))
        needs_reference = any(lang != REFERENCE for lang in need)
        if needs_reference and REFERENCE not in need:
            if REFERENCE in reuse:
                # The reference set is every English paragraph: the lines of the complete cached English corpus.
                self._english = frozenset(p for doc in iter_documents(reuse[REFERENCE]) for p in doc.split("\n"))
            else:
                need.insert(0, REFERENCE)
        self._tmp = Path(tempfile.mkdtemp(prefix="plasticlm-debian-"))
        chosen = self._resolve(need)
        debs = self._download(sorted(set(chosen.values())))
        for lang, pkg in chosen.items():
            deb = self._debs[lang] = debs[pkg]
            version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
            self._packages[lang] = {"package": pkg, "version": version}
        if needs_reference and self._english is None:
            self._english = frozenset(p for page in self._extract(REFERENCE) for p in page)

    def _extract(self, lang: str) -> list[list[str]]:
        """Paragraphs of every page of ``lang``'s package (cached until its documents are written)."""
        if lang in self._pages:
            return self._pages[lang]
        assert self._tmp is not None
        deb = self._debs[lang]
        out = self._tmp / "x" / lang
        out.mkdir(parents=True, exist_ok=True)
        r = _run(["dpkg-deb", "-x", str(deb), str(out)])
        if r.returncode != 0:
            raise DataError(f"language {lang!r}: dpkg-deb -x {deb} failed: {r.stderr.strip()}")
        try:
            pages = help_pages(out, f"language {lang!r} ({deb.name})", self.data.workers, self._progress)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        self._pages[lang] = pages
        return pages

    def documents(self, lang: str) -> Iterator[str]:
        pages = self._extract(lang)
        reference = self._english if lang != REFERENCE else frozenset()
        assert reference is not None
        stats = self._stats[lang] = {}
        yield from page_documents(pages, reference, stats)
        self._pages.pop(lang, None)

    def provenance(self, lang: str) -> dict[str, Any]:
        return {**self._packages.get(lang, {}), **self._stats.get(lang, {})}

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None



def help_pages(package_root: Path, what: str = "", workers: int = 0, progress: bool = False) -> list[list[str]]:
    """Paragraphs of every page under ``package_root/usr/share/libreoffice/help/<dir>/text``, in sorted path order.

    Pages are parsed by ``workers`` processes (0 = all cores; forked, since spawn would re-run the
    caller's __main__); the result does not depend on the number of workers.
    """
    roots = sorted(p for p in (Path(package_root) / "usr/share/libreoffice/help").glob("*/text") if p.is_dir())
    if len(roots) != 1:
        raise DataError(f"{what}: expected one usr/share/libreoffice/help/<lang>/text directory, found {len(roots)}")
    root = roots[0]
    files = sorted(root.rglob("*.html"), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DataError(f"{what}: no help pages (*.html) under {root}")
    bar = dict(total=len(files), desc=f"extract {root.parent.name}", unit="page", file=sys.stderr, disable=not progress)
    workers = min(workers or os.cpu_count() or 1, max(1, len(files) // 64))
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(tqdm(pool.map(page_paragraphs, files, chunksize=32), **bar))
    return [page_paragraphs(f) for f in tqdm(files, **bar)]


def page_documents(
    pages: list[list[str]], reference: frozenset[str] = frozenset(), stats: dict[str, int] | None = None
) -> Iterator[str]:
    """One document per page: its paragraphs not in ``reference`` and not seen before, joined by newlines."""
    stats = stats if stats is not None else {}
    stats.update(
        pages=len(pages),
        paragraphs=sum(map(len, pages)),
        english_fallback_paragraphs=sum(p in reference for page in pages for p in page),
        kept_paragraphs=0,
    )
    for kept in filter_paragraphs(pages, reference):
        if kept:
            stats["kept_paragraphs"] += len(kept)
            yield "\n".join(kept)
