"""Reading a study directory (or one run directory) for the report.

Only files inside DIR are read. Every part is optional except at least one run: a missing or
unreadable file becomes a note in ``ReportInput.problems`` (or an explanation in its section),
never an exception, so a report can be made of a study that is still running.

Study directory (written by ``plasticlm study``; layout in ``sweep``)::

    DIR/config.toml, study.json, onsets.csv, sizes.csv, fit.json, runs/<name>/ (run directories)

A study's results are read as records (``plasticlm.records``): onsets.csv and sizes.csv as
``OnsetRecord`` / ``SizeRecord``, fit.json as ``ScalingFit``. Nothing is recomputed: a run without
a row in onsets.csv has no onset on the page (the problems say how to write it). A run directory
(config.toml + metrics.jsonl or run.json) is reported as a study of one run; its onset is computed
here, once, by ``analysis.onset_from_run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from plasticlm.analysis import load_probes, onset_from_run
from plasticlm.config import AnalysisConfig, Config, load_config
from plasticlm.errors import PlasticError
from plasticlm.model import build_gpt_config, non_embedding_params
from plasticlm.onset import moving_average
from plasticlm.records import FitFailure, OnsetRecord, SizeRecord, read_fit, read_onsets, read_sizes
from plasticlm.runlog import read_json, read_jsonl
from plasticlm.scaling import ScalingFit

SOURCE_STUDY = "onsets.csv"
SOURCE_RUN = "computed from each run's probes.jsonl"
"""Where a run's onset comes from (``RunData.onset_source``)."""


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
    method: str | None = None
    """The run's mitigation (``runspec.RunTags.method``); None = the plain recipe."""
    params: int | None = None
    status: str | None = None
    wall_time_s: float | None = None
    config: Config | None = None
    info: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    """diagnostics.jsonl rows (`plasticlm diagnose`), one per diagnosed checkpoint."""
    onset: OnsetRecord | None = None
    onset_source: str | None = None
    """Where the onset comes from: ``SOURCE_STUDY`` or ``SOURCE_RUN``."""
    onset_reason: str | None = None
    """Why there is no onset, or why it is censored (``OnsetRecord.reason``); None for an interior onset."""
    window: int = AnalysisConfig.window
    """The onset rule's moving-average window (the study's ``analysis.window``)."""
    exists: bool = True

    @property
    def label(self) -> str:
        seed = "" if self.seed is None else f" s{self.seed}"
        method = "" if self.method is None else f" {self.method}"
        return f"{self.preset or self.name}{seed}{method}"

    @property
    def tasks_per_cycle(self) -> int | None:
        return len(self.config.stream.languages) if self.config else None

    @property
    def probe_lang(self) -> str | None:
        return self.config.probe.language if self.config else None

    @property
    def peak_lr(self) -> float | None:
        """The peak LR training recorded in run.json's summary (None when absent)."""
        return (self.info.get("summary") or {}).get("peak_lr")

    def column(self, key: str) -> np.ndarray:
        """A probes.jsonl column as floats (NaN for null), in task-index order."""
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in self.probes])

    def smoothed(self, key: str = "dauc", x_key: str = "task_index") -> tuple[np.ndarray, np.ndarray]:
        """The centred moving average of a probe column with the onset rule's window (its curve)."""
        y = self.column(key)
        if y.size < self.window or not np.all(np.isfinite(y)):
            return np.empty(0), np.empty(0)
        h = (self.window - 1) // 2
        return self.column(x_key)[h: y.size - h], moving_average(y, self.window)

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
    config: Config | None = None
    """The study's config (DIR/config.toml; a run directory's own config)."""
    fit: ScalingFit | None = None
    fit_note: str | None = None
    """Why there is no usable fit (fit.json absent, holding an error, or unreadable)."""
    problems: list[str] = field(default_factory=list)
    onsets: list[OnsetRecord] = field(default_factory=list)
    """onsets.csv (study directories only)."""
    sizes: list[SizeRecord] = field(default_factory=list)
    """sizes.csv: per (size, stream) onsets from the seeds (study directories only)."""

    @property
    def window(self) -> int:
        return self.config.analysis.window if self.config is not None else AnalysisConfig.window

    def rel(self, text: str) -> str:
        """A message with DIR's absolute path removed (the page holds no absolute paths)."""
        for prefix in (str(self.root.resolve()), str(self.root)):
            text = text.replace(prefix + "/", "").replace(prefix, ".")
        return text


# --------------------------------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    return (path / "config.toml").is_file() and ((path / "metrics.jsonl").is_file() or (path / "run.json").is_file())


def load_report_input(root: str | Path, n_boot: int | None = None) -> ReportInput:
    """Read DIR: a study directory or a single run directory. ``n_boot``: bootstrap draws for the onset
    of a single run directory (None = its probe.bootstrap); a study's onsets are read, not computed."""
    root = Path(root)
    if not root.is_dir():
        raise PlasticError(f"{root}: no such directory; give a study directory or a run directory")
    if is_run_dir(root) and not (root / "study.json").exists():
        inp = ReportInput(root, "run", [])
        run = _load_run(inp, {"name": root.resolve().name}, root, ".")
        inp.runs.append(run)
        inp.config = run.config
        _compute_onset(inp, run, n_boot)
    else:
        inp = ReportInput(root, "study", [])
        _load_study(inp)
    if not inp.runs:
        raise PlasticError(
            f"{root}: no run found. Give a study directory (study.json, or runs/<name>/ with config.toml) "
            "written by `plasticlm study`, or a run directory (config.toml + metrics.jsonl) written by "
            "`plasticlm train`"
        )
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
    if (root / "config.toml").exists():
        try:
            inp.config = load_config(root / "config.toml")
        except PlasticError as e:
            inp.problems.append(inp.rel(f"config.toml: {e}"))
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
    inp.onsets = _records(inp, "onsets.csv", read_onsets)
    by_name = {r.name: r for r in inp.onsets}
    missing = []
    for run in inp.runs:
        record = by_name.get(run.name)
        if record is None:
            missing.append(run.name)
            continue
        run.onset, run.onset_source = record, SOURCE_STUDY
        run.onset_reason = record.reason(len(run.probes), run.window) if record.code != "onset" else None
    if missing and (inp.root / "onsets.csv").exists():
        inp.problems.append(f"onsets.csv has no row for {', '.join(missing)}: their onsets are not shown; run "
                            "`plasticlm sweep CONFIG --no-train` to write them")
    inp.sizes = _records(inp, "sizes.csv", read_sizes)
    _load_fit(inp)


def _records(inp: ReportInput, name: str, read: Any) -> list:
    """A study's records file (``records.read_onsets`` / ``read_sizes``); absent or unreadable: a problem."""
    path = inp.root / name
    if not path.exists():
        inp.problems.append(f"{name} is absent: the study writes it once its runs are probed "
                            "(`plasticlm sweep CONFIG --no-train` writes it for the runs that finished)")
        return []
    try:
        return read(path)
    except PlasticError as e:
        inp.problems.append(inp.rel(str(e)))
        return []


def _load_fit(inp: ReportInput) -> None:
    path = inp.root / "fit.json"
    if not path.exists():
        inp.fit_note = ("fit.json is absent: the study writes it once onsets exist at 3 or more model sizes "
                        "(a power law fitted to fewer points has no residual degrees of freedom)")
        return
    try:
        fit = read_fit(path)
    except PlasticError as e:
        inp.problems.append(inp.rel(f"fit.json: cannot read the scaling-law fit: {e}"))
        inp.fit_note = "fit.json could not be read (see Input problems)"
        return
    if isinstance(fit, FitFailure):
        inp.fit_note = f"the fit failed: {inp.rel(fit.error)}"
    elif "power" not in fit.fits:
        inp.fit_note = "fit.json holds no power-law fit (fits.power)"
    else:
        inp.fit = fit


def _load_run(inp: ReportInput, entry: dict[str, Any], path: Path, rel: str) -> RunData:
    run = RunData(name=str(entry.get("name") or path.name), rel=rel, path=path, preset=entry.get("preset"),
                  seed=entry.get("seed"), stream=entry.get("stream"), method=entry.get("method"),
                  params=entry.get("non_embedding_params"), status=entry.get("status"),
                  wall_time_s=entry.get("wall_time_s"))
    if inp.config is not None:
        run.window = inp.config.analysis.window
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
        if inp.kind == "run":
            run.window = cfg.analysis.window
    summary = run.info.get("summary") or {}
    run.params = run.params or summary.get("non_embedding_params") or _params_from_config(cfg)
    run.status = run.status or run.info.get("status")
    run.wall_time_s = run.wall_time_s if run.wall_time_s is not None else run.info.get("wall_time_s")
    return run


def _params_from_config(cfg: Config | None) -> int | None:
    if cfg is None:
        return None
    try:
        return non_embedding_params(build_gpt_config(cfg.model, cfg.model.vocab_size or 1024))
    except PlasticError:
        return None


def _compute_onset(inp: ReportInput, run: RunData, n_boot: int | None) -> None:
    """A single run directory's onset (no study files to read): ``analysis.onset_from_run``, once."""
    if not run.probes:
        return
    try:
        doc = onset_from_run(run.path, window=run.window, n_boot=n_boot, seed=run.seed or 0)
    except (PlasticError, OSError, ValueError, KeyError) as e:
        inp.problems.append(inp.rel(f"run {run.name}: cannot compute its onset: {e}"))
        return
    run.onset = OnsetRecord.from_document(run.name, run.preset or "", run.stream or "", run.params or 0,
                                          run.seed or 0, doc)
    run.onset_source, run.onset_reason = SOURCE_RUN, doc["reason"]
