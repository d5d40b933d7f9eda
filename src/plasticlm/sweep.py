"""Size sweeps: one study config over its runs (``runspec.expand``), then probes, onsets and the fit.

Study directory (stable; `plasticlm report` reads it)::

    STUDY_DIR/
      config.toml      the resolved study config
      study.json       the runs (name, preset, seed, stream, method, run_dir, non_embedding_params, status,
                       wall_time_s) and the stages with their status and seconds
      runs/<name>/     one run directory each, named <preset>-s<seed>-<stream>[-<method>] (layout in train.py)
      onsets.csv       one ``records.OnsetRecord`` per run: name, preset, stream, non_embedding_params, seed,
                       onset_task_index, onset_tokens, code (onset.REASON_CODES: onset, left_censored,
                       still_improving, too_few_points, no_probes, not_finished), censored (left/right/
                       empty), lower_bound_task_index (right-censored runs), seq_ci95_low, seq_ci95_high,
                       seq_ci_fraction_null (bootstrap over validation sequences: evaluation noise only),
                       probe_se_dauc (probe noise from replicates), net_degradation_tokens, method (empty
                       without a method axis), plus params and onset (aliases read by `plasticlm fit`)
      sizes.csv        one ``records.SizeRecord`` per (preset, stream, method): n_seeds, the onset of the seed-averaged
                       dAUC curve (onset_task_index, onset_tokens, code, censored, lower_bound_task_index), its
                       95% CI from a bootstrap over runs (runs_ci95_low, runs_ci95_high), the seeds' own onsets
                       (seed_onsets, ";"-separated, empty = none), seeds_agree and method
      fit.json         the scaling-law fit (``scaling.ScalingFit``, as `plasticlm fit --json`) of the onsets
                       ``records.fit_points`` selects, extrapolated to ``analysis.extrapolate_to``
                       (``records.FitFailure``, {"error": ..., "n": ...}, if impossible)

Onsets use the study's ``analysis.window``. Every stage is resumable: a finished run is skipped, an
interrupted one resumes from its last checkpoint, probed checkpoints are not probed again.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

from plasticlm.analysis import onset_from_run, onset_of_seeds
from plasticlm.config import Config, dumps_toml, loads_toml, to_dict
from plasticlm.cpu import configure_cpu
from plasticlm.data.needs import served_tokens_per_task
from plasticlm.data.prepare import prepare_data
from plasticlm.data.stream import steps_per_task, task_count
from plasticlm.errors import PlasticError
from plasticlm.launch import run_on_cluster
from plasticlm.model import build_gpt_config, non_embedding_params
from plasticlm.probe import pending_checkpoints, probe_run_dir
from plasticlm.progress import progress_bar
from plasticlm.records import (
    FitFailure,
    OnsetRecord,
    SizeRecord,
    fit_points,
    write_fit,
    write_onsets,
    write_sizes,
)
from plasticlm.rundir import run_status
from plasticlm.runlog import atomic_write_json, atomic_write_text, environment_info, read_json, read_jsonl
from plasticlm.runspec import RunSpec, expand
from plasticlm.scaling import ScalingFit, fit_scaling
from plasticlm.train import train_or_resume


def _train_worker(args: tuple[str, str, int]) -> dict[str, Any]:
    """Entry point of a spawned training process (loads the cached data itself)."""
    run_dir, cfg_toml, threads = args
    configure_cpu(threads)
    return train_or_resume(Path(run_dir), loads_toml(cfg_toml), quiet=True)


def _steps_done(run_dir: Path) -> int:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return rows[-1]["step"] if rows else 0


def train_runs(specs: list[RunSpec], study_dir: Path, parallel: int = 1, quiet: bool = False,
               data: Any = None) -> None:
    """Train every run that is not done; ``parallel`` runs at once in spawned processes."""
    failed = [s.name for s in specs if run_status(s.run_dir(study_dir)) == "failed"]
    if failed and not quiet:
        # resuming would repeat the same non-finite step exactly: leave them, report them
        print(f"[sweep] skipping runs that failed with a non-finite loss: {', '.join(failed)} "
              "(see their run.json; remove a run directory to train it again)", file=sys.stderr)
    todo = [s for s in specs if run_status(s.run_dir(study_dir)) not in ("done", "failed")]
    if not todo:
        return
    if parallel <= 1 or len(todo) == 1:
        for s in todo:
            if not quiet:
                print(f"[sweep] training {s.name}", file=sys.stderr)
            train_or_resume(s.run_dir(study_dir), s.cfg, quiet, data)
        return
    threads = max(1, (os.cpu_count() or 1) // parallel)
    # largest models first: the pool then packs the small runs beside them instead of after them
    order = sorted(todo, key=lambda s: -non_embedding_params(build_gpt_config(s.cfg.model, 1)))
    jobs = [(str(s.run_dir(study_dir)), dumps_toml(s.cfg), threads) for s in order]
    totals = {s.name: _total_steps(s.cfg) for s in todo}
    bar = None
    if not quiet:
        bar = progress_bar(total=sum(totals.values()), unit="step",
                           desc=f"sweep ({len(todo)} runs, {parallel} at once)")
    with mp.get_context("spawn").Pool(min(parallel, len(todo))) as pool:
        pending = pool.map_async(_train_worker, jobs, chunksize=1)
        while not pending.ready():
            pending.wait(2.0)
            if bar is not None:
                done = sum(min(_steps_done(s.run_dir(study_dir)), totals[s.name]) for s in todo)
                bar.n = done
                bar.refresh()
        pending.get()  # re-raises a worker's error
        pool.close()  # let the workers exit on their own: terminate() (the with-block's exit) can leave
        pool.join()   # a semaphore behind, which the resource tracker then warns about at shutdown
    if bar is not None:
        bar.n = bar.total
        bar.close()


def _total_steps(cfg: Config) -> int:
    b, t = cfg.train.batch_size, cfg.model.seq_len
    return steps_per_task(cfg.stream.tokens_per_task, b, t) * task_count(cfg.stream)


def probe_runs(specs: list[RunSpec], study_dir: Path, workers: int = 1, quiet: bool = False,
               data: Any = None) -> None:
    """Post-hoc probes for runs trained with probe.in_run = false (and any probe point missed)."""
    for s in specs:
        run_dir = s.run_dir(study_dir)
        if run_status(run_dir) == "done" and pending_checkpoints(run_dir):
            probe_run_dir(run_dir, workers=workers, progress=not quiet, data=data)


def onset_records(specs: list[RunSpec], study_dir: Path, vocab_size: int, window: int) -> list[OnsetRecord]:
    """One record per run: its onset (``analysis.onset_from_run``), or why there is none."""
    out = []
    for s in specs:
        run_dir = s.run_dir(study_dir)
        params = non_embedding_params(build_gpt_config(s.cfg.model, vocab_size))
        doc, code = None, None
        if run_status(run_dir) != "done":
            code = "not_finished"
        else:
            try:
                doc = onset_from_run(run_dir, window=window, n_boot=s.cfg.probe.bootstrap, seed=s.seed)
            except PlasticError:
                code = "no_probes"
        out.append(OnsetRecord.from_document(s.name, s.preset, s.stream, params, s.seed, doc, code, s.method))
    return out


def size_records(records: list[OnsetRecord], study_dir: Path, window: int, n_boot: int = 1000) -> list[SizeRecord]:
    """One record per (preset, stream, method): the onset of the seed-averaged curve of its finished, probed
    runs, with a bootstrap CI over runs (``analysis.onset_of_seeds``); the code says why there is none."""
    groups: dict[tuple[str, str, str | None], list[OnsetRecord]] = {}
    for r in records:
        groups.setdefault((r.preset, r.stream, r.method), []).append(r)
    out = []
    for (preset, stream, method), rs in groups.items():
        usable = [r for r in rs if r.code not in ("not_finished", "no_probes")]
        doc: dict[str, Any] = {"code": rs[0].code if not usable else None}
        if usable:
            try:
                doc = onset_of_seeds([study_dir / "runs" / r.name for r in usable], window=window, n_boot=n_boot)
            except PlasticError:
                doc = {"code": "too_few_points"}
        out.append(SizeRecord.from_document(preset, stream, rs[0].non_embedding_params, len(usable), doc, method))
    return out


def fit_onsets(records: list[OnsetRecord], cfg: Config) -> ScalingFit | FitFailure:
    """The scaling-law fit of the onsets ``records.fit_points`` selects, extrapolated to
    ``analysis.extrapolate_to``; a ``FitFailure`` when a fit is impossible."""
    pts = fit_points(records, cfg)
    n_sizes = len({r.non_embedding_params for r in pts})
    if n_sizes < 3:
        return FitFailure(f"{n_sizes} size(s) with an onset; a scaling-law fit needs at least 3 (runs without "
                          f"an onset: {sum(1 for r in records if r.onset_task_index is None)})", len(pts))
    try:
        return fit_scaling([r.non_embedding_params for r in pts], [r.onset_task_index for r in pts],
                           extrapolate_to=cfg.analysis.extrapolate_to, tokens_per_task=served_tokens_per_task(cfg),
                           seed=0, left_censored=[r.censored == "left" for r in pts])
    except PlasticError as e:
        return FitFailure(str(e), len(pts))


class StudyLog:
    """study.json: the runs and the stages (status, seconds), rewritten atomically after each stage."""

    def __init__(self, study_dir: Path, cfg: Config, config_path: str | None):
        self.path = study_dir / "study.json"
        self.doc = read_json(self.path) if self.path.exists() else {
            "config": config_path, **environment_info(), "stages": {}, "runs": []}

    def stage(self, name: str, status: str, seconds: float | None = None) -> None:
        entry = self.doc["stages"].setdefault(name, {})
        entry["status"] = status
        if seconds is not None:
            entry["seconds"] = round(entry.get("seconds", 0.0) + seconds, 2) if status == "done" else seconds
        atomic_write_json(self.path, self.doc)

    def runs(self, specs: list[RunSpec], study_dir: Path, vocab_size: int) -> None:
        out = []
        for s in specs:
            run_dir = s.run_dir(study_dir)
            info = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
            out.append({"name": s.name, "preset": s.preset, "seed": s.seed, "stream": s.stream, "method": s.method,
                        "run_dir": str(run_dir.relative_to(study_dir)),
                        "non_embedding_params": non_embedding_params(build_gpt_config(s.cfg.model, vocab_size)),
                        "status": info.get("status", "missing"), "wall_time_s": info.get("wall_time_s")})
        self.doc["runs"] = out
        atomic_write_json(self.path, self.doc)


RESULT_NEUTRAL_KEYS = frozenset({"sweep.parallel", "sweep.out_dir", "stream.allow_reuse", "train.tensorboard",
                                 "train.malloc"})
"""Config keys that change how a study runs, not what it computes: an existing study directory may be
continued with other values of these (and with keys that newer code added at their defaults)."""
RESULT_NEUTRAL_SECTIONS = ("dist.", "slurm.")
"""Whole sections that say how a study runs (processes per run, cluster jobs), not what it computes: a
study may continue under other values of them (another partition, FSDP instead of DDP)."""


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(stored: Config, cfg: Config) -> list[str]:
    """Dotted keys whose values differ between two configs, result-neutral keys left out."""
    a, b = _flat(to_dict(stored)), _flat(to_dict(cfg))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in RESULT_NEUTRAL_KEYS
                  and not k.startswith(RESULT_NEUTRAL_SECTIONS))


def init_study_dir(cfg: Config, study_dir: Path) -> None:
    """Create the study directory, or check that an existing one holds the same study.

    The stored config is read with this code (keys added since it was written take their
    defaults) and compared value by value, so a study survives a code update that adds options;
    any difference outside ``RESULT_NEUTRAL_KEYS`` is an error naming the keys."""
    study_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = study_dir / "config.toml"
    text = dumps_toml(cfg)
    if cfg_path.exists() and cfg_path.read_text() != text:
        try:
            diff = config_differences(loads_toml(cfg_path.read_text()), cfg)
        except PlasticError as e:
            diff = [f"(the stored config cannot be read: {e})"]
        if diff:
            raise PlasticError(
                f"{study_dir} holds a study with a different config ({cfg_path}: {', '.join(diff)} differ); choose "
                "another sweep.out_dir (--set sweep.out_dir=...) or remove the directory to start again"
            )
    atomic_write_text(cfg_path, text)


def run_sweep(cfg: Config, study_dir: str | Path | None = None, *, config_path: str | None = None,
              parallel: int | None = None, quiet: bool = False, data: Any = None,
              train: bool = True, launcher: str = "local", cluster: str | None = None) -> dict[str, Any]:
    """Train all runs, probe what is missing, detect onsets, fit; return a summary.

    ``train=False`` analyses a study as it stands (one still training elsewhere, or one stopped
    early): finished runs are probed where needed and enter onsets.csv, sizes.csv and fit.json;
    the others are listed with code ``not_finished``.

    ``launcher = "local"`` trains in this process or a local pool (``parallel``); ``"slurm"`` submits
    the runs and their post-hoc probes as job arrays (``launch.py``; ``cluster`` picks submitit's
    executor: None = detect, "local" runs the same jobs as local processes), then probes here whatever
    the jobs left (in-run probes need none)."""
    if launcher not in ("local", "slurm"):
        raise PlasticError(f"--launcher {launcher!r}: use local (this machine) or slurm (job arrays)")
    study_dir = Path(study_dir or cfg.sweep.out_dir)
    init_study_dir(cfg, study_dir)
    log = StudyLog(study_dir, cfg, config_path)
    specs = expand(cfg)
    vocab = data.vocab_size if data is not None else _vocab_size(cfg, quiet)
    log.runs(specs, study_dir, vocab)

    jobs = None
    if train and launcher == "slurm":
        t0 = time.perf_counter()
        log.stage("train_and_probe_jobs", "running")
        jobs = run_on_cluster(cfg, specs, study_dir, quiet=quiet, cluster=cluster)
        log.doc["jobs"] = jobs
        log.stage("train_and_probe_jobs", "done" if not jobs["unfinished"] else "incomplete",
                  time.perf_counter() - t0)
        log.runs(specs, study_dir, vocab)
    elif train:
        t0 = time.perf_counter()
        log.stage("train", "running")
        train_runs(specs, study_dir, parallel or cfg.sweep.parallel, quiet, data)
        log.stage("train", "done", time.perf_counter() - t0)
        log.runs(specs, study_dir, vocab)

    t0 = time.perf_counter()
    log.stage("probe", "running")
    probe_runs(specs, study_dir, workers=parallel or cfg.sweep.parallel, quiet=quiet, data=data)
    log.stage("probe", "done", time.perf_counter() - t0)

    t0 = time.perf_counter()
    window = cfg.analysis.window
    onsets = onset_records(specs, study_dir, vocab, window)
    write_onsets(onsets, study_dir / "onsets.csv")
    sizes = size_records(onsets, study_dir, window, cfg.probe.bootstrap)
    write_sizes(sizes, study_dir / "sizes.csv")
    fit = fit_onsets(onsets, cfg)
    write_fit(fit, study_dir / "fit.json")
    log.stage("onsets_and_fit", "done", time.perf_counter() - t0)
    out = {"study_dir": str(study_dir), "runs": len(specs), "onsets": [dataclasses.asdict(r) for r in onsets],
           "sizes": [dataclasses.asdict(z) for z in sizes], "fit": fit.to_json()}
    if jobs is not None:
        out["jobs"] = jobs
    return out


def _vocab_size(cfg: Config, quiet: bool) -> int:
    """The vocabulary of the study's data (builds corpus, tokenizer and shards when missing)."""
    if cfg.model.vocab_size:
        return cfg.model.vocab_size
    return prepare_data(cfg, progress=not quiet).vocab_size
