"""What every section function receives (``Context``) and returns when it cannot be shown (``Skipped``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plasticlm.report.figures import png_size
from plasticlm.report.html import Block, Image, Note
from plasticlm.report.load import ReportInput


@dataclass
class Skipped:
    """A section that applies but cannot be shown, and why."""

    title: str
    reason: str


@dataclass
class Context:
    inp: ReportInput
    out: Path
    """The report directory (DIR/report)."""
    figures: list[Path] = field(default_factory=list)

    def figure(self, name: str, draw: Callable[[Path], object], alt: str, caption: str) -> Block:
        """Draw one figure into the report directory; a failure becomes a note on the page."""
        path = self.out / name
        try:
            draw(path)
        except Exception as e:  # one broken figure must not cost the rest of the report
            return Note(f"Figure {name} could not be drawn: {type(e).__name__}: {self.inp.rel(str(e))}")
        self.figures.append(path)
        w, h = png_size(path)
        return Image(name, alt, caption, w, h)
