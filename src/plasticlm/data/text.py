"""Text extraction and cleaning: visible text of help pages, paragraph filters, UTF-8 decoding.

The HTML rules follow the project's data-source notes (README, "Data"): the standard library's
html.parser; head, script and style dropped; paragraphs split at block-level tags; whitespace
collapsed. We also drop the page chrome of the LibreOffice help (header, aside, nav, footer: the
same menu and debug lines on every page) so that a page's document is its help text only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path

# Tags whose content is never text of the page (page chrome, code, metadata).
SKIP_TAGS = frozenset({"head", "script", "style", "header", "footer", "aside", "nav", "noscript", "template"})
# Tags that start or end a paragraph.
BLOCK_TAGS = frozenset({
    "address", "article", "blockquote", "br", "caption", "dd", "div", "dl", "dt", "figcaption", "figure",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "main", "ol", "p", "pre", "section", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
})
# Void elements never get an end tag: they must not open a skipped region.
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "wbr"})


def collapse_ws(text: str) -> str:
    """Collapse every run of whitespace (Unicode-aware: includes NBSP and ideographic space) to one space."""
    return " ".join(text.split())


class _ParagraphParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._buf: list[str] = []
        self._skip = 0

    def _flush(self) -> None:
        text = collapse_ws("".join(self._buf))
        self._buf = []
        if text:
            self.paragraphs.append(text)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in SKIP_TAGS and tag not in _VOID:
            self._flush()
            self._skip += 1
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_paragraphs(html: str) -> list[str]:
    """Visible paragraphs of an HTML page, in document order (whitespace collapsed, empties dropped)."""
    parser = _ParagraphParser()
    parser.feed(html)
    parser.close()
    return parser.paragraphs


def html_file_paragraphs(path: str | Path) -> list[str]:
    """Paragraphs of one HTML file (decoded as UTF-8, invalid bytes replaced); picklable for a process pool."""
    return html_paragraphs(Path(path).read_bytes().decode("utf-8", errors="replace"))


def filter_paragraphs(
    pages: Iterable[list[str]], reference: set[str] | frozenset[str] = frozenset()
) -> Iterator[list[str]]:
    """Drop paragraphs found in ``reference`` and every repeat of an earlier paragraph (first one kept).

    For a translated help, ``reference`` is the set of English paragraphs: a paragraph that occurs
    verbatim in the English help is an untranslated fallback (58% of the Vietnamese paragraphs, 10%
    of the German ones; data-sources.md). Yields each page's surviving paragraphs (possibly empty).
    """
    seen: set[str] = set()
    for page in pages:
        kept = []
        for para in page:
            if para in reference or para in seen:
                continue
            seen.add(para)
            kept.append(para)
        yield kept


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Decode UTF-8 with invalid sequences replaced by U+FFFD; returns (text, number of replacements).

    A U+FFFD that was validly encoded in the input is not counted as a replacement.
    """
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return text, text.count("\ufffd") - raw.count("\ufffd".encode())


def blank_line_paragraphs(text: str) -> list[str]:
    """Split text on blank lines (lines holding only whitespace); each part stripped, empties dropped."""
    return list(iter_paragraphs(text.splitlines()))


def iter_paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """``blank_line_paragraphs`` over lines as they come (a file streamed line by line)."""
    cur: list[str] = []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            if part := "\n".join(cur).strip():
                yield part
            cur = []
    if cur and (part := "\n".join(cur).strip()):
        yield part
