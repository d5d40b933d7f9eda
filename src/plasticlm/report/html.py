"""The report page: content blocks and their rendering to one self-contained HTML file.

Sections are lists of blocks (paragraphs, bullet lists, tables, figures, notes); ``render_page``
turns them into a page with inline CSS, no script, no external resource and no absolute path:
figures are PNG files beside ``index.html``, referenced by file name. All text goes through
``html.escape``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: #1d1d1f; max-width: 1180px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.1em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #e3e3e8; padding-bottom: 0.2em; margin-top: 2em; }
.meta { color: #6e6e73; font-size: 0.9em; margin-top: 0; }
nav { background: #f5f5f7; padding: 0.6em 1em; border-radius: 6px; font-size: 0.92em; }
nav a { margin-right: 1.2em; color: #0b57d0; text-decoration: none; white-space: nowrap; }
nav a:hover { text-decoration: underline; }
.summary li { margin: 0.35em 0; }
.note { background: #fff8e1; border-left: 4px solid #f2b600; padding: 0.5em 0.9em; margin: 0.8em 0; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e8; }
figcaption { color: #424245; font-size: 0.9em; margin-top: 0.3em; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.84em; margin: 0.6em 0 1.2em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #d2d2d7; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f5f5f7; font-weight: 600; }
td { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td:last-child { white-space: normal; min-width: 8em; }
tr.best td { background: #e8f5e9; font-weight: 600; }
footer { margin-top: 3em; color: #6e6e73; font-size: 0.85em; }
"""


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    best_rows: set[int] = field(default_factory=set)
    """Row indices drawn highlighted (e.g. the best form by leave-one-out RMSE)."""


@dataclass
class Image:
    src: str
    """File name relative to index.html."""
    alt: str
    caption: str
    width: int = 0
    height: int = 0


@dataclass
class Note:
    """Something the reader must know: a figure that was not drawn and why, a missing input."""

    text: str


Block = Paragraph | Bullets | Table | Image | Note


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block]


_NUMERIC = re.compile(r"^[-+\[\]\d.,eE KMBT%()]+$")
"""Cells drawn right-aligned: numbers, intervals like [3, 5], token counts like 1.2K."""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(text: str) -> str:
    num = ' class="num"' if text == "-" or (_NUMERIC.match(text) and any(ch.isdigit() for ch in text)) else ""
    return f"<td{num}>{esc(text)}</td>"


def render_block(b: Block) -> str:
    if isinstance(b, Paragraph):
        return f"<p>{esc(b.text)}</p>"
    if isinstance(b, Note):
        return f'<p class="note">{esc(b.text)}</p>'
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Image):
        size = f' width="{b.width}" height="{b.height}"' if b.width and b.height else ""
        return (f'<figure><img src="{esc(b.src)}" alt="{esc(b.alt)}"{size}>'
                f"<figcaption>{esc(b.caption)}</figcaption></figure>")
    if isinstance(b, Table):
        head = "".join(f"<th>{esc(c)}</th>" for c in b.columns)
        best = ' class="best"'
        body = "".join(
            f"<tr{best if i in b.best_rows else ''}>" + "".join(_cell(c) for c in row) + "</tr>"
            for i, row in enumerate(b.rows)
        )
        cap = f"<caption>{esc(b.caption)}</caption>" if b.caption else ""
        return f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    raise TypeError(f"unknown block {type(b).__name__}")


def render_page(title: str, meta: str, sections: list[Section], footer: str) -> str:
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1><p class=\"meta\">{esc(meta)}</p>",
        f"<nav>{nav}</nav>",
    ]
    for s in sections:
        cls = ' class="summary"' if s.id == "summary" else ""
        parts.append(f'<section id="{esc(s.id)}"{cls}><h2>{esc(s.title)}</h2>')
        parts += [render_block(b) for b in s.blocks]
        parts.append("</section>")
    parts.append(f"<footer>{esc(footer)}</footer></body></html>")
    return "\n".join(parts) + "\n"
