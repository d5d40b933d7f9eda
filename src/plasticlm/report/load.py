"""Reading a study directory (or one run directory) for the report.

Only files inside DIR are read. Every part is optional except at least one run: a missing or
unreadable file becomes a note in ``ReportInput.problems`` (or an explanation in its section),
never an exception, so a report can be made of a study that is still running.

Study directory (written by ``plasticlm study``)::

    DIR/config.toml, study.json, onsets.csv, fit.json, runs/<name>/ (run directories, train.py)

A run directory (config.toml + metrics.jsonl or run.json) is reported as a study of one run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from plasticlm.analysis import load_probes, onset_from_run, onset_of_seeds
from plasticlm.config import Config, load_config
from plasticlm.errors import PlasticError
from plasticlm.onset import CENSORING, REASON_CODES, find_onset, moving_average
from plasticlm.runlog import read_json, read_jsonl

WINDOW = 3  # the paper's moving-average window for the onset (arXiv:2606.24752)


@dataclass
class RunOnset:
    """The onset of one run, in task instances (probe points) and tokens, with its CI."""

    task_index: float | None
    tokens: float | None
    ci: tuple[float, float] | None
    """95% bootstrap interval in task instances over validation sequences (evaluation noise only)."""
    net_tokens: float | None
    """Net degradation: first probe after the minimum whose smoothed dAUC is > 0 (tokens)."""
    reason: str | None
    """Why there is no onset, or why it is censored (the rule's sentence)."""
    source: str
    """Where it comes from: 'onsets.csv' or "computed from each run's probes.jsonl"."""
    fraction_null: float | None = None
    """Fraction of bootstrap draws without an onset (when known)."""
    code: str | None = None
    """``onset.REASON_CODES``: onset, left_censored, still_improving, too_few_points, no_probes, ..."""
    lower_bound: float | None = None
    """Right-censored (still_improving): the onset is at or after this task index."""
    probe_se: float | None = None
    """Noise of the run's probe score in dAUC points, from probe replicates (None without)."""

    @property
    def censored(self) -> str | None:
        return CENSORING.get(self.code or "")


@dataclass
class SizeOnset:
    """The onset of one size and stream from its seeds (sizes.csv, or ``analysis.onset_of_seeds``)."""

    preset: str
    stream: str
    params: float | None
    n_seeds: int
    task_index: float | None
    """The onset of the seed-averaged dAUC curve (also when left-censored)."""
    tokens: float | None
    code: str | None
    lower_bound: float | None
    runs_ci: tuple[float, float] | None
    """95% bootstrap interval over runs (seeds): includes training noise."""
    seed_onsets: list[float | None]
    seeds_agree: bool | None

    @property
    def censored(self) -> str | None:
        return CENSORING.get(self.code or "")


@dataclass
class RunData:
    """One run of the study: its identity, config, logs, probe scores and onset."""

    name: str
    rel: str
    """Run directory relative to DIR ('.' for a single-run report)."""
    path: Path
    preset: str | None = None
    seed: int | None = None
    stream: str | None = None
    params: int | None = None
    status: str | None = None
    wall_time_s: float | None = None
    config: Config | None = None
    info: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    """diagnostics.jsonl rows (`plasticlm diagnose`), one per diagnosed checkpoint."""
    onset: RunOnset | None = None
    exists: bool = True

    @property
    def label(self) -> str:
        seed = "" if self.seed is None else f" s{self.seed}"
        return f"{self.preset or self.name}{seed}"

    @property
    def tasks_per_cycle(self) -> int | None:
        return len(self.config.stream.languages) if self.config else None

    @property
    def probe_lang(self) -> str | None:
        return self.config.probe.language if self.config else None

    @property
    def peak_lr(self) -> float | None:
        lr = (self.info.get("summary") or {}).get("peak_lr")
        if lr is None and self.config is not None and self.params:
            from plasticlm.optim import peak_lr

            lr = peak_lr(self.config.optim, self.params)
        return lr

    def column(self, key: str) -> np.ndarray:
        """A probes.jsonl column as floats (NaN for null), in task-index order."""
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in self.probes])

    def smoothed(self, key: str = "dauc", x_key: str = "task_index") -> tuple[np.ndarray, np.ndarray]:
        """The centred window-3 moving average of a probe column (the onset rule's curve)."""
        y = self.column(key)
        if y.size < WINDOW or not np.all(np.isfinite(y)):
            return np.empty(0), np.empty(0)
        h = (WINDOW - 1) // 2
        return self.column(x_key)[h: y.size - h], moving_average(y, WINDOW)

    def tokens_at(self, task_index: float | None) -> float | None:
        """tokens_seen of the probe at ``task_index`` (None when there is none)."""
        for r in self.probes:
            if task_index is not None and r["task_index"] == task_index:
                return float(r["tokens_seen"])
        return None


@dataclass
class ReportInput:
    root: Path
    kind: Literal["study", "run"]
    runs: list[RunData]
    study: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None
    fit_note: str | None = None
    """Why there is no usable fit (fit.json absent, holding an error, or unreadable)."""
    problems: list[str] = field(default_factory=list)
    sizes: list[SizeOnset] = field(default_factory=list)
    """Per (size, stream) onsets from the seeds (study directories only)."""

    def rel(self, text: str) -> str:
        """A message with DIR's absolute path removed (the page holds no absolute paths)."""
        for prefix in (str(self.root.resolve()), str(self.root)):
            text = text.replace(prefix + "/", "").replace(prefix, ".")
        return text


# --------------------------------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    return (path / "config.toml").is_file() and ((path / "metrics.jsonl").is_file() or (path / "run.json").is_file())


def load_report_input(root: str | Path, n_boot: int | None = None) -> ReportInput:
    """Read DIR: a study directory or a single run directory. ``n_boot``: bootstrap draws for onsets
    computed here (runs absent from onsets.csv); None = the run's probe.bootstrap."""
    root = Path(root)
    if not root.is_dir():
        raise PlasticError(f"{root}: no such directory; give a study directory or a run directory")
    if is_run_dir(root) and not (root / "study.json").exists():
        inp = ReportInput(root, "run", [])
        inp.runs.append(_load_run(inp, {"name": root.resolve().name}, root, "."))
    else:
        inp = ReportInput(root, "study", [])
        _load_study(inp)
    if not inp.runs:
        raise PlasticError(
            f"{root}: no run found. Give a study directory (study.json, or runs/<name>/ with config.toml) "
            "written by `plasticlm study`, or a run directory (config.toml + metrics.jsonl) written by "
            "`plasticlm train`"
        )
    onsets = _read_onsets_csv(inp) if inp.kind == "study" else {}
    for run in inp.runs:
        run.onset = _run_onset(inp, run, onsets.get(run.name), n_boot)
    if inp.kind == "study":
        inp.sizes = _read_sizes_csv(inp) or _compute_sizes(inp, n_boot)
    return inp


def _read(inp: ReportInput, path: Path, what: str) -> Any:
    """JSON at ``path`` or None (absent) with unreadable files noted as problems."""
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        inp.problems.append(f"{inp.rel(str(path))}: cannot read {what}: {e}")
        return None


def _load_study(inp: ReportInput) -> None:
    root = inp.root
    inp.study = _read(inp, root / "study.json", "the study record")
    entries = list((inp.study or {}).get("runs") or [])
    listed = {e.get("run_dir") for e in entries}
    runs_dir = root / "runs"
    if runs_dir.is_dir():  # runs on disk the study record does not list yet (a study in progress)
        for d in sorted(runs_dir.iterdir()):
            if d.is_dir() and (d / "config.toml").exists() and f"runs/{d.name}" not in listed:
                entries.append({"name": d.name, "run_dir": f"runs/{d.name}"})
    for e in entries:
        rel = str(e.get("run_dir") or f"runs/{e.get('name')}")
        path = (root / rel).resolve()
        if not path.is_relative_to(root.resolve()):
            inp.problems.append(f"run {e.get('name')!r}: run_dir {rel!r} lies outside the study directory; not read")
            continue
        inp.runs.append(_load_run(inp, e, path, rel))
    _load_fit(inp)


def _load_fit(inp: ReportInput) -> None:
    path = inp.root / "fit.json"
    if not path.exists():
        inp.fit_note = ("fit.json is absent: the study writes it once onsets exist at 3 or more model sizes "
                        "(a power law fitted to fewer points has no residual degrees of freedom)")
        return
    doc = _read(inp, path, "the scaling-law fit")
    if not isinstance(doc, dict):
        inp.fit_note = "fit.json could not be read (see Input problems)"
    elif doc.get("error"):
        inp.fit_note = f"the fit failed: {inp.rel(str(doc['error']))}"
    elif not isinstance((doc.get("fits") or {}).get("power"), dict) or doc["fits"]["power"].get("b") is None:
        inp.fit_note = "fit.json holds no power-law fit (fits.power with a and b)"
    else:
        inp.fit = doc


def _load_run(inp: ReportInput, entry: dict[str, Any], path: Path, rel: str) -> RunData:
    run = RunData(name=str(entry.get("name") or path.name), rel=rel, path=path, preset=entry.get("preset"),
                  seed=entry.get("seed"), stream=entry.get("stream"), params=entry.get("non_embedding_params"),
                  status=entry.get("status"), wall_time_s=entry.get("wall_time_s"))
    if not (path / "config.toml").exists():
        run.exists = False
        return run
    try:
        run.config = load_config(path / "config.toml")
    except PlasticError as e:
        inp.problems.append(inp.rel(f"run {run.name}: config.toml: {e}"))
    run.info = _read(inp, path / "run.json", "run.json") or {}
    run.metrics = read_jsonl(path / "metrics.jsonl")
    run.diagnostics = read_jsonl(path / "diagnostics.jsonl")
    try:
        run.probes = load_probes(path)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        inp.problems.append(inp.rel(f"run {run.name}: probes.jsonl has a malformed row ({type(e).__name__}: {e}); "
                                    "its probe scores are not shown"))
    cfg = run.config
    if cfg is not None:
        run.preset = run.preset or cfg.model.preset or None
        run.seed = cfg.train.seed if run.seed is None else run.seed
        run.stream = run.stream or cfg.stream.kind
    summary = run.info.get("summary") or {}
    run.params = run.params or summary.get("non_embedding_params") or _params_from_config(cfg)
    run.status = run.status or run.info.get("status")
    run.wall_time_s = run.wall_time_s if run.wall_time_s is not None else run.info.get("wall_time_s")
    return run


def _params_from_config(cfg: Config | None) -> int | None:
    if cfg is None:
        return None
    from plasticlm.model import build_gpt_config, non_embedding_params

    try:
        return non_embedding_params(build_gpt_config(cfg.model, cfg.model.vocab_size or 1024))
    except PlasticError:
        return None


# --------------------------------------------------------------------------------------------
# Onsets
# --------------------------------------------------------------------------------------------


def _num(cell: str | None) -> float | None:
    cell = (cell or "").strip()
    if cell.lower() in ("", "null", "none", "nan", "na"):
        return None
    return float(cell)


_ONSET_NUMBERS = ("onset_task_index", "onset_tokens", "seq_ci95_low", "seq_ci95_high", "net_degradation_tokens",
                  "seq_ci_fraction_null", "lower_bound_task_index", "probe_se_dauc")


def _read_csv_rows(inp: ReportInput, name: str, numbers: tuple[str, ...], texts: tuple[str, ...]
                   ) -> list[dict[str, Any]]:
    """Rows of a study CSV (onsets.csv, sizes.csv) with the named number and text columns; a bad row
    or file is noted as a problem, never a crash."""
    path = inp.root / name
    if not path.exists():
        return []
    out = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    rec: dict[str, Any] = {k: _num(row[k]) for k in numbers}
                    rec.update({k: (row[k] or "").strip() or None for k in texts})
                    out.append(rec)
                except (KeyError, ValueError) as e:
                    inp.problems.append(f"{name} line {line}: not a valid row ({e}); ignored")
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        inp.problems.append(f"{name}: cannot read it ({e}); its values are recomputed from the runs")
        return []
    return out


def _read_onsets_csv(inp: ReportInput) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in _read_csv_rows(inp, "onsets.csv", _ONSET_NUMBERS, ("name", "code"))}


def _run_onset(inp: ReportInput, run: RunData, row: dict[str, Any] | None, n_boot: int | None) -> RunOnset | None:
    """The onset from onsets.csv when the study wrote one, else computed from the run's probes."""
    if row is not None:
        reason = None
        if row["code"] not in (None, "onset"):
            reason = _reason(run) if run.probes else REASON_CODES.get(row["code"], row["code"])
        lo, hi = row["seq_ci95_low"], row["seq_ci95_high"]
        return RunOnset(row["onset_task_index"], row["onset_tokens"], None if lo is None or hi is None else (lo, hi),
                        row["net_degradation_tokens"], reason, "onsets.csv", row["seq_ci_fraction_null"],
                        row["code"], row["lower_bound_task_index"], row["probe_se_dauc"])
    if not run.probes:
        return None
    try:
        doc = onset_from_run(run.path, window=WINDOW, n_boot=n_boot)
    except (PlasticError, OSError, ValueError, KeyError) as e:
        inp.problems.append(inp.rel(f"run {run.name}: cannot compute its onset: {e}"))
        return None
    ci = tuple(doc["ci95"]) if doc.get("ci95") else None
    noise = doc.get("probe_noise") or {}
    return RunOnset(doc["onset_task_index"], doc["onset_tokens"], ci, doc["net_degradation_tokens"], doc["reason"],
                    "computed from each run's probes.jsonl", doc.get("ci_fraction_null"), doc["code"],
                    doc["lower_bound_task_index"], noise.get("se_dauc"))


def _reason(run: RunData) -> str | None:
    """Why the run's dAUC curve has no onset, or why it is censored (the rule's own sentence)."""
    try:
        return find_onset(run.column("task_index"), run.column("dauc"), WINDOW).reason
    except PlasticError as e:
        return str(e)


def _read_sizes_csv(inp: ReportInput) -> list[SizeOnset]:
    rows = _read_csv_rows(inp, "sizes.csv", ("non_embedding_params", "n_seeds", "onset_task_index", "onset_tokens",
                                             "lower_bound_task_index", "runs_ci95_low", "runs_ci95_high"),
                          ("preset", "stream", "code", "seed_onsets", "seeds_agree"))
    out = []
    for r in rows:
        lo, hi = r["runs_ci95_low"], r["runs_ci95_high"]
        seeds = [_num(x) for x in (r["seed_onsets"] or "").split(";")] if r["seed_onsets"] else []
        out.append(SizeOnset(r["preset"] or "-", r["stream"] or "-", r["non_embedding_params"],
                             int(r["n_seeds"] or 0), r["onset_task_index"], r["onset_tokens"], r["code"],
                             r["lower_bound_task_index"], None if lo is None or hi is None else (lo, hi), seeds,
                             None if r["seeds_agree"] is None else r["seeds_agree"] == "True"))
    return out


def _compute_sizes(inp: ReportInput, n_boot: int | None) -> list[SizeOnset]:
    """Size onsets from the runs' probes, for a study directory without sizes.csv."""
    groups: dict[tuple[str, str], list[RunData]] = {}
    for r in inp.runs:
        if r.probes and r.preset and r.stream:
            groups.setdefault((r.preset, r.stream), []).append(r)
    out = []
    for (preset, stream), rs in groups.items():
        try:
            doc = onset_of_seeds([r.path for r in rs], window=WINDOW, n_boot=1000 if n_boot is None else n_boot)
        except (PlasticError, OSError, ValueError, KeyError) as e:
            inp.problems.append(inp.rel(f"{preset} ({stream}): cannot compute the onset over seeds: {e}"))
            continue
        ci = doc.get("ci95_runs")
        out.append(SizeOnset(preset, stream, rs[0].params, len(rs), doc["onset_task_index"], doc["onset_tokens"],
                             doc["code"], doc["lower_bound_task_index"], tuple(ci) if ci else None,
                             doc["seed_onsets"], doc["seeds_agree"]))
    return out
