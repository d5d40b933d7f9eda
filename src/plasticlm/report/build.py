"""``build_report(DIR)``: the HTML report of a study (or of one run) from the files in DIR.

Writes ``DIR/report/index.html`` and its figures (``fig-*.png``, beside the page) and nothing
else; reads only files inside DIR. The page is self-contained (inline CSS, no script, no network,
relative image paths), so the report directory can be copied or served as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from plasticlm.report.context import Context
from plasticlm.report.html import Bullets, render_page
from plasticlm.report.load import load_report_input
from plasticlm.report.sections import build_sections
from plasticlm.runlog import atomic_write_text


@dataclass
class Report:
    """What ``make_report`` wrote."""

    index: Path
    figures: list[Path]
    sections: list[str]
    """Ids of the sections on the page, in order."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Sections that apply but could not be shown: {"section", "reason"}."""
    summary: list[str] = field(default_factory=list)
    """The page's summary, one plain-text sentence group per bullet (for terminals and JSON)."""

    def to_json(self) -> dict[str, Any]:
        return {"index": str(self.index), "figures": [str(p) for p in self.figures], "sections": self.sections,
                "skipped": self.skipped, "summary": self.summary}


def _version() -> str:
    try:
        return metadata.version("plasticlm")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_report(directory: str | Path, n_boot: int | None = None) -> Report:
    """Build the report of DIR (a study or run directory) into DIR/report; see ``build_report``."""
    inp = load_report_input(directory, n_boot)
    out = Path(directory) / "report"
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(inp, out)
    sections, skipped = build_sections(ctx)
    name = Path(directory).resolve().name
    kind = "Study" if inp.kind == "study" else "Run"
    created = (inp.study or {}).get("created")
    meta = (f"{kind} directory {name}" + (f", study created {created}" if created else "")
            + f"; report generated {datetime.now(UTC).isoformat(timespec='seconds')} by plasticlm {_version()}.")
    footer = ("Made by `plasticlm report` from the files of this directory only. Protocol: Hernandez-Garcia, "
              "Figliolia, Millidge, \"Can Scale Save Us From Plasticity Loss in Large Language Models?\", "
              "arXiv:2606.24752. The confidence intervals of the onsets and the bootstrap interval of b are "
              "this project's additions: the paper reports no uncertainty on the onset.")
    index = out / "index.html"
    atomic_write_text(index, render_page(f"Plasticity report: {name}", meta, sections, footer))
    keep = {p.name for p in ctx.figures}
    for old in out.glob("fig-*.png"):  # figures of an earlier build that this one did not draw
        if old.name not in keep:
            old.unlink()
    bullets = [b for s in sections if s.id == "summary" for b in s.blocks if isinstance(b, Bullets)]
    return Report(index, list(ctx.figures), [s.id for s in sections],
                  [{"section": s.title, "reason": s.reason} for s in skipped],
                  [item for b in bullets for item in b.items])


def build_report(directory: str | Path, n_boot: int | None = None) -> Path:
    """Write DIR/report/index.html (and its PNG figures) for a study or run directory; return its path.

    ``n_boot``: bootstrap draws for the onset of a single run directory (a study's onsets are read
    from onsets.csv); None = the run's ``probe.bootstrap``. Raises
    ``PlasticError`` when DIR holds no run.
    """
    return make_report(directory, n_boot).index
