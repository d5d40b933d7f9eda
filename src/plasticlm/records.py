"""A study's results as typed records that round-trip through their files.

``onsets.csv`` holds one ``OnsetRecord`` per run, ``sizes.csv`` one ``SizeRecord`` per (preset,
stream), ``fit.json`` a ``scaling.ScalingFit`` (``ScalingFit.from_json`` reads it back) or a
``FitFailure``. The sweep writes them; the report reads them and recomputes none of them. Every
reader returns records equal to those written (codes, censoring, every statistic; tested), and
rejects a malformed file with a ``PlasticError`` naming the file, the line and the column.

Cells: empty = None; integers are written without a decimal point and floats with one (Python's
``str``), so each number reads back with its type and its exact value.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticlm.config import Config
from plasticlm.errors import PlasticError
from plasticlm.onset import CENSORING, REASON_CODES, onset_reason
from plasticlm.runlog import atomic_write_json, atomic_write_text, read_json
from plasticlm.runspec import in_scaling_fit
from plasticlm.scaling import ScalingFit

Number = int | float


@dataclass(frozen=True)
class OnsetRecord:
    """One run's onset: a row of onsets.csv (the columns are the fields, plus ``params`` and ``onset``,
    aliases of ``non_embedding_params`` and ``onset_task_index`` that `plasticlm fit` reads)."""

    name: str
    preset: str
    stream: str
    non_embedding_params: int
    seed: int
    onset_task_index: Number | None
    """The onset in task instances, also when left-censored; None without one."""
    onset_tokens: int | None
    code: str
    """``onset.REASON_CODES``: onset, left_censored, still_improving, too_few_points, no_probes, not_finished."""
    censored: str | None
    """"left" (at or before), "right" (no onset yet) or None (``onset.CENSORING``)."""
    lower_bound_task_index: Number | None
    """Right-censored runs: the onset is at or after this task index."""
    seq_ci95_low: Number | None
    seq_ci95_high: Number | None
    """95% bootstrap interval over validation sequences: evaluation noise only."""
    seq_ci_fraction_null: float | None
    """Fraction of those bootstrap draws without an onset."""
    probe_se_dauc: float | None
    """Probe noise (standard error of the score, dAUC points) from probe replicates."""
    net_degradation_tokens: int | None
    method: str | None = None
    """The run's method on a study's method axis (``sweep.methods``); None without one."""

    @property
    def seq_ci95(self) -> tuple[Number, Number] | None:
        lo, hi = self.seq_ci95_low, self.seq_ci95_high
        return None if lo is None or hi is None else (lo, hi)

    def reason(self, n_points: int, window: int) -> str | None:
        """The onset rule's sentence for this record (``onset.onset_reason``); None for an interior onset.
        ``n_points``: the run's probe points (for too_few_points)."""
        return onset_reason(self.code, self.onset_task_index, self.lower_bound_task_index, n_points, window)

    @classmethod
    def from_document(cls, name: str, preset: str, stream: str, params: int, seed: int, doc: dict[str, Any] | None,
                      code: str | None = None, method: str | None = None) -> OnsetRecord:
        """From ``analysis.onset_from_run``'s document, or without one (``doc`` None) with ``code``
        no_probes or not_finished."""
        doc = doc or {}
        ci = doc.get("ci95") or [None, None]
        noise = doc.get("probe_noise") or {}
        return cls(name, preset, stream, params, seed, doc.get("onset_task_index"), doc.get("onset_tokens"),
                   code or doc["code"], doc.get("censored"), doc.get("lower_bound_task_index"), ci[0], ci[1],
                   doc.get("ci_fraction_null"), noise.get("se_dauc"), doc.get("net_degradation_tokens"), method)


@dataclass(frozen=True)
class SizeRecord:
    """One size and stream over its seeds: a row of sizes.csv (``analysis.onset_of_seeds``)."""

    preset: str
    stream: str
    non_embedding_params: int
    n_seeds: int
    """Finished, probed runs used."""
    onset_task_index: Number | None
    """The onset of the seed-averaged dAUC curve (also when left-censored)."""
    onset_tokens: int | None
    code: str | None
    censored: str | None
    lower_bound_task_index: Number | None
    runs_ci95_low: Number | None
    runs_ci95_high: Number | None
    """95% bootstrap interval over runs (seeds): includes training noise."""
    seed_onsets: tuple[Number | None, ...] | None
    """Each seed's own onset (None = none); None when not computed (no usable run, or too few points
    shared by several runs). sizes.csv joins them with ";"."""
    seeds_agree: bool | None
    method: str | None = None
    """The runs' method on a study's method axis (``sweep.methods``); None without one."""

    @property
    def runs_ci95(self) -> tuple[Number, Number] | None:
        lo, hi = self.runs_ci95_low, self.runs_ci95_high
        return None if lo is None or hi is None else (lo, hi)

    @classmethod
    def from_document(cls, preset: str, stream: str, params: int, n_seeds: int, doc: dict[str, Any],
                      method: str | None = None) -> SizeRecord:
        """From ``analysis.onset_of_seeds``'s document, or a ``{"code": ...}`` one when there is no onset to
        compute. A single run whose size has too few points has no onset of its own either: ``(None,)``."""
        ci = doc.get("ci95_runs") or [None, None]
        seeds = doc.get("seed_onsets")
        if seeds is None and n_seeds == 1:
            seeds = [None]
        return cls(preset, stream, params, n_seeds, doc.get("onset_task_index"), doc.get("onset_tokens"),
                   doc.get("code"), doc.get("censored"), doc.get("lower_bound_task_index"), ci[0], ci[1],
                   None if seeds is None else tuple(seeds), doc.get("seeds_agree"), method)


@dataclass(frozen=True)
class FitFailure:
    """fit.json when no scaling law could be fitted: why, and how many onsets there were."""

    error: str
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "n": self.n}


# --------------------------------------------------------------------------------------------
# The fit's points: one rule
# --------------------------------------------------------------------------------------------


def fit_points(records: list[OnsetRecord], cfg: Config) -> list[OnsetRecord]:
    """The onsets the scaling law uses: runs of ``runspec.in_scaling_fit`` with an onset, left-censored
    ones unless ``sweep.fit_left_censored`` is false. The one rule of the sweep and the report."""
    return [r for r in records if in_scaling_fit(r.stream, cfg, r.method) and r.onset_task_index is not None
            and (cfg.sweep.fit_left_censored or r.censored != "left")]


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


ONSET_COLUMNS = [f.name for f in dataclasses.fields(OnsetRecord)] + ["params", "onset"]
SIZE_COLUMNS = [f.name for f in dataclasses.fields(SizeRecord)]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, tuple):
        return ";".join(_cell(x) for x in v)
    return str(v)


def _number(text: str) -> Number | None:
    """A cell written by ``_cell``: empty -> None, "16" -> 16, "0.25" -> 0.25 (the type it was written with)."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def _bool(text: str) -> bool | None:
    if text not in ("", "True", "False"):
        raise ValueError(f"{text!r} is not True, False or empty")
    return None if text == "" else text == "True"


def _seeds(text: str, n_seeds: int) -> tuple[Number | None, ...] | None:
    """Empty with 0 or several seeds: not computed (several seeds always have ";"); one seed: (None,)."""
    if text == "" and n_seeds != 1:
        return None
    return tuple(_number(x) for x in text.split(";"))


def _write_csv(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(v) for v in row])
    atomic_write_text(path, buf.getvalue())


OPTIONAL_COLUMNS = ("method",)
"""Columns added since the first files were written: a header without them is read with them empty."""


def _read_csv(path: Path, columns: list[str]) -> list[tuple[int, dict[str, str]]]:
    """(line, row) of a CSV that must have exactly ``columns`` as its header (or the header written
    before ``OPTIONAL_COLUMNS`` were added, whose cells then read as empty)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise PlasticError(f"{path}: cannot read it ({e})") from None
    legacy = [c for c in columns if c not in OPTIONAL_COLUMNS]
    if not rows or rows[0] not in (columns, legacy):
        raise PlasticError(f"{path}: the header is not {','.join(columns)}: not a file this version of the study "
                           "writes; run `plasticlm sweep CONFIG --no-train` to write it again")
    header = rows[0]
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise PlasticError(f"{path} line {line}: {len(row)} cells for {len(header)} columns")
        out.append((line, {c: "" for c in columns} | dict(zip(header, row))))
    return out


def _parse(path: Path, line: int, what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (ValueError, TypeError) as e:
        raise PlasticError(f"{path} line {line}: {what}: {e}") from None


def _check_code(path: Path, line: int, code: str | None, censored: str | None) -> None:
    if code is not None and code not in REASON_CODES:
        raise PlasticError(f"{path} line {line}: code {code!r} is not one of {', '.join(REASON_CODES)}")
    if censored != CENSORING.get(code or ""):
        raise PlasticError(f"{path} line {line}: censored {censored!r} does not match code {code!r}")


# --------------------------------------------------------------------------------------------
# onsets.csv
# --------------------------------------------------------------------------------------------


def write_onsets(records: list[OnsetRecord], path: Path) -> None:
    rows = [[*dataclasses.astuple(r), r.non_embedding_params, r.onset_task_index] for r in records]
    _write_csv(path, ONSET_COLUMNS, rows)


def read_onsets(path: Path) -> list[OnsetRecord]:
    out = []
    names: set[str] = set()
    for line, row in _read_csv(path, ONSET_COLUMNS):
        nums = {k: _parse(path, line, k, _number, row[k]) for k in ONSET_COLUMNS
                if k not in ("name", "preset", "stream", "code", "censored", "method")}
        if row["name"] in names:
            raise PlasticError(f"{path} line {line}: run {row['name']!r} appears twice")
        names.add(row["name"])
        if nums["params"] != nums["non_embedding_params"] or nums["onset"] != nums["onset_task_index"]:
            raise PlasticError(f"{path} line {line}: params/onset differ from non_embedding_params/onset_task_index")
        censored = row["censored"] or None
        _check_code(path, line, row["code"], censored)
        fields = {k: nums[k] for k in nums if k not in ("params", "onset")}
        out.append(OnsetRecord(name=row["name"], preset=row["preset"], stream=row["stream"], code=row["code"],
                               censored=censored, method=row["method"] or None, **fields))
    return out


# --------------------------------------------------------------------------------------------
# sizes.csv
# --------------------------------------------------------------------------------------------


def write_sizes(records: list[SizeRecord], path: Path) -> None:
    _write_csv(path, SIZE_COLUMNS, [list(dataclasses.astuple(r)) for r in records])


def read_sizes(path: Path) -> list[SizeRecord]:
    out = []
    texts = ("preset", "stream", "code", "censored", "seed_onsets", "seeds_agree", "method")
    for line, row in _read_csv(path, SIZE_COLUMNS):
        nums = {k: _parse(path, line, k, _number, row[k]) for k in SIZE_COLUMNS if k not in texts}
        code, censored = row["code"] or None, row["censored"] or None
        _check_code(path, line, code, censored)
        out.append(SizeRecord(
            preset=row["preset"], stream=row["stream"], code=code, censored=censored,
            seed_onsets=_parse(path, line, "seed_onsets", _seeds, row["seed_onsets"], nums["n_seeds"]),
            seeds_agree=_parse(path, line, "seeds_agree", _bool, row["seeds_agree"]), method=row["method"] or None,
            **nums))
    return out


# --------------------------------------------------------------------------------------------
# fit.json
# --------------------------------------------------------------------------------------------


def write_fit(fit: ScalingFit | FitFailure, path: Path) -> None:
    atomic_write_json(path, fit.to_json())


def read_fit(path: Path) -> ScalingFit | FitFailure:
    """fit.json back into the fit it was written from (``ScalingFit.from_json``) or its ``FitFailure``."""
    try:
        doc = read_json(path)
    except (OSError, ValueError) as e:
        raise PlasticError(f"{path}: cannot read it ({e})") from None
    if not isinstance(doc, dict):
        raise PlasticError(f"{path}: not a JSON object")
    if "error" in doc:
        return FitFailure(str(doc["error"]), int(doc.get("n") or 0))
    try:
        return ScalingFit.from_json(doc)
    except (KeyError, TypeError, ValueError) as e:
        raise PlasticError(f"{path}: not a scaling-law fit ({type(e).__name__}: {e})") from None

