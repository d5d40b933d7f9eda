"""Size sweeps: one study config over presets x seeds (x streams), then probes, onsets and the fit.

Study directory (stable; `plasticlm report` reads it)::

    STUDY_DIR/
      config.toml      the resolved study config
      study.json       the runs (name, preset, seed, stream, run_dir, non_embedding_params, status,
                       wall_time_s) and the stages with their status and seconds
      runs/<preset>-s<seed>-<stream>/   one run directory each (layout in train.py)
      onsets.csv       one row per run: name, preset, stream, non_embedding_params, seed,
                       onset_task_index, onset_tokens, ci95_low, ci95_high, ci_fraction_null (share of
                       bootstrap draws without an onset), net_degradation_tokens, plus params and onset
                       (aliases read by `plasticlm fit`)
      fit.json         `plasticlm fit --json` on the continual onsets ({"error": ...} if impossible)

Every stage is resumable: a finished run is skipped, an interrupted one resumes from its last
checkpoint, probed checkpoints are not probed again.
"""

from __future__ import annotations

import csv
import io
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticlm.config import Config, dumps_toml, from_dict, to_dict
from plasticlm.data.stream import steps_per_task
from plasticlm.errors import PlasticError
from plasticlm.model import build_gpt_config, non_embedding_params
from plasticlm.plan import served_tokens_per_task
from plasticlm.runlog import atomic_write_json, atomic_write_text, environment_info, read_json, read_jsonl

ONSET_COLUMNS = ["name", "preset", "stream", "non_embedding_params", "seed", "onset_task_index", "onset_tokens",
                 "ci95_low", "ci95_high", "ci_fraction_null", "net_degradation_tokens", "params", "onset"]


@dataclass(frozen=True)
class RunSpec:
    name: str
    preset: str
    seed: int
    stream: str
    cfg: Config

    def run_dir(self, study_dir: Path) -> Path:
        return study_dir / "runs" / self.name


def run_specs(cfg: Config) -> list[RunSpec]:
    """Presets x seeds x (the study's stream [+ a stationary twin]) with the per-run config overrides.

    With ``sweep.stationary`` a continual study adds a stationary run of each preset in
    ``sweep.stationary_presets`` ([] = every preset), the paper's control (arXiv:2606.24752, "Stationary
    control": 5M, 12M and 27M). With ``sweep.stationary_probe_every_tokens`` > 0 the stationary runs are
    probed every that many tokens and only then (the paper: every 5B); otherwise at the token counts of
    their continual twins. A twin's sweep keys are reset: a run config describes one run.
    """
    sw = cfg.sweep
    twins = set(sw.stationary_presets or sw.presets) if sw.stationary and cfg.stream.kind == "continual" else set()
    specs = []
    for preset in sw.presets:
        for seed in sw.seeds:
            for stream in [cfg.stream.kind] + (["stationary"] if preset in twins else []):
                d = to_dict(cfg)
                d["model"]["preset"] = preset
                d["model"]["depth"] = 0
                d["train"]["seed"] = seed
                if stream != cfg.stream.kind:
                    d["stream"]["kind"] = stream
                    d["sweep"].update(stationary=False, stationary_presets=[], stationary_probe_every_tokens=0)
                    if sw.stationary_probe_every_tokens > 0:
                        d["probe"].update(every_tokens=sw.stationary_probe_every_tokens, at_cycle_end=False,
                                          after_languages=[])
                run_cfg = from_dict(d, f"sweep {preset} {stream}")
                specs.append(RunSpec(f"{preset}-s{seed}-{stream}", preset, seed, stream, run_cfg))
    return specs


def _status(run_dir: Path) -> str:
    path = run_dir / "run.json"
    return read_json(path).get("status", "created") if path.exists() else "missing"


def _train_one(run_dir: Path, cfg: Config, quiet: bool, data: Any = None) -> dict[str, Any]:
    """Train, or resume when the run directory already holds the run. A run stopped by a non-finite
    loss is reported (status "failed" in its run.json) and does not stop the other runs."""
    from plasticlm.errors import NonFiniteLoss
    from plasticlm.experiment import resume_run, train_run

    try:
        if (run_dir / "config.toml").exists():
            return resume_run(run_dir, quiet=quiet, data=data)
        return train_run(cfg, run_dir, quiet=quiet, data=data)
    except NonFiniteLoss as e:
        print(f"[sweep] {run_dir.name} failed: {e}", file=sys.stderr)
        return {"run_dir": str(run_dir), "error": str(e)}


def _train_worker(args: tuple[str, str, int]) -> dict[str, Any]:
    """Entry point of a spawned training process (loads the cached data itself)."""
    run_dir, cfg_toml, threads = args
    from plasticlm.config import loads_toml
    from plasticlm.model import configure_cpu

    configure_cpu(threads)
    return _train_one(Path(run_dir), loads_toml(cfg_toml), quiet=True)


def _steps_done(run_dir: Path) -> int:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return rows[-1]["step"] if rows else 0


def train_runs(specs: list[RunSpec], study_dir: Path, parallel: int = 1, quiet: bool = False,
               data: Any = None) -> None:
    """Train every run that is not done; ``parallel`` runs at once in spawned processes."""
    failed = [s.name for s in specs if _status(s.run_dir(study_dir)) == "failed"]
    if failed and not quiet:
        # resuming would repeat the same non-finite step exactly: leave them, report them
        print(f"[sweep] skipping runs that failed with a non-finite loss: {', '.join(failed)} "
              "(see their run.json; remove a run directory to train it again)", file=sys.stderr)
    todo = [s for s in specs if _status(s.run_dir(study_dir)) not in ("done", "failed")]
    if not todo:
        return
    if parallel <= 1 or len(todo) == 1:
        for s in todo:
            if not quiet:
                print(f"[sweep] training {s.name}", file=sys.stderr)
            _train_one(s.run_dir(study_dir), s.cfg, quiet, data)
        return
    threads = max(1, (os.cpu_count() or 1) // parallel)
    # largest models first: the pool then packs the small runs beside them instead of after them
    order = sorted(todo, key=lambda s: -non_embedding_params(build_gpt_config(s.cfg.model, 1)))
    jobs = [(str(s.run_dir(study_dir)), dumps_toml(s.cfg), threads) for s in order]
    totals = {s.name: _total_steps(s.cfg) for s in todo}
    bar = None
    if not quiet:
        from plasticlm.progress import progress_bar

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
    return steps_per_task(cfg.stream.tokens_per_task, b, t) * len(cfg.stream.languages) * cfg.stream.cycles


def probe_runs(specs: list[RunSpec], study_dir: Path, workers: int = 1, quiet: bool = False,
               data: Any = None) -> None:
    """Post-hoc probes for runs trained with probe.in_run = false (and any probe point missed)."""
    from plasticlm.probe import pending_checkpoints, probe_run_dir

    for s in specs:
        run_dir = s.run_dir(study_dir)
        if _status(run_dir) == "done" and pending_checkpoints(run_dir):
            probe_run_dir(run_dir, workers=workers, progress=not quiet, data=data)


def _fmt(v: Any) -> str:
    return "" if v is None else str(v)


def onset_rows(specs: list[RunSpec], study_dir: Path, vocab_size: int) -> list[dict[str, Any]]:
    from plasticlm.analysis import onset_from_run

    rows = []
    for s in specs:
        run_dir = s.run_dir(study_dir)
        params = non_embedding_params(build_gpt_config(s.cfg.model, vocab_size))
        try:
            if _status(run_dir) != "done":
                raise PlasticError(f"{s.name} did not finish: no onset from a partial curve")
            doc = onset_from_run(run_dir, window=3, n_boot=s.cfg.probe.bootstrap, seed=s.seed)
        except PlasticError:
            doc = {"onset_task_index": None, "onset_tokens": None, "ci95": None, "net_degradation_tokens": None,
                   "ci_fraction_null": None}
        ci = doc.get("ci95") or [None, None]
        rows.append({
            "name": s.name, "preset": s.preset, "stream": s.stream, "non_embedding_params": params, "seed": s.seed,
            "onset_task_index": doc["onset_task_index"], "onset_tokens": doc["onset_tokens"],
            "ci95_low": ci[0], "ci95_high": ci[1], "ci_fraction_null": doc.get("ci_fraction_null"),
            "net_degradation_tokens": doc.get("net_degradation_tokens"),
            "params": params, "onset": doc["onset_task_index"],
        })
    return rows


def write_onsets_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ONSET_COLUMNS)
    for r in rows:
        w.writerow([_fmt(r[c]) for c in ONSET_COLUMNS])
    atomic_write_text(path, buf.getvalue())


def fit_onsets(rows: list[dict[str, Any]], cfg: Config) -> dict[str, Any]:
    """The fit document of the continual onsets; ``{"error": ...}`` when a fit is impossible."""
    from plasticlm.scaling import fit_scaling

    pts = [(r["params"], r["onset"]) for r in rows if r["stream"] == cfg.stream.kind and r["onset"] is not None]
    n_sizes = len({p for p, _ in pts})
    if n_sizes < 3:
        return {"error": f"{n_sizes} size(s) with an onset; a scaling-law fit needs at least 3 "
                         f"(runs without an onset: {sum(1 for r in rows if r['onset'] is None)})", "n": len(pts)}
    try:
        fit = fit_scaling([p for p, _ in pts], [t for _, t in pts], extrapolate_to=[1e9, 7e9],
                          tokens_per_task=served_tokens_per_task(cfg), seed=0)
    except PlasticError as e:
        return {"error": str(e), "n": len(pts)}
    return fit.to_json()


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
            out.append({"name": s.name, "preset": s.preset, "seed": s.seed, "stream": s.stream,
                        "run_dir": str(run_dir.relative_to(study_dir)),
                        "non_embedding_params": non_embedding_params(build_gpt_config(s.cfg.model, vocab_size)),
                        "status": info.get("status", "missing"), "wall_time_s": info.get("wall_time_s")})
        self.doc["runs"] = out
        atomic_write_json(self.path, self.doc)


def init_study_dir(cfg: Config, study_dir: Path) -> None:
    """Create the study directory, or check that an existing one holds the same study."""
    study_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = study_dir / "config.toml"
    text = dumps_toml(cfg)
    if cfg_path.exists() and cfg_path.read_text() != text:
        raise PlasticError(
            f"{study_dir} holds a study with a different config ({cfg_path}); choose another sweep.out_dir "
            "(--set sweep.out_dir=...) or remove the directory to start again"
        )
    atomic_write_text(cfg_path, text)


def run_sweep(cfg: Config, study_dir: str | Path | None = None, *, config_path: str | None = None,
              parallel: int | None = None, quiet: bool = False, data: Any = None) -> dict[str, Any]:
    """Train all runs, probe what is missing, detect onsets, fit; return a summary."""
    study_dir = Path(study_dir or cfg.sweep.out_dir)
    init_study_dir(cfg, study_dir)
    log = StudyLog(study_dir, cfg, config_path)
    specs = run_specs(cfg)
    vocab = data.vocab_size if data is not None else _vocab_size(cfg, quiet)
    log.runs(specs, study_dir, vocab)

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
    rows = onset_rows(specs, study_dir, vocab)
    write_onsets_csv(rows, study_dir / "onsets.csv")
    fit = fit_onsets(rows, cfg)
    atomic_write_json(study_dir / "fit.json", fit)
    log.stage("onsets_and_fit", "done", time.perf_counter() - t0)
    return {"study_dir": str(study_dir), "runs": len(specs), "onsets": rows, "fit": fit}


def _vocab_size(cfg: Config, quiet: bool) -> int:
    """The vocabulary of the study's data (builds corpus, tokenizer and shards when missing)."""
    if cfg.model.vocab_size:
        return cfg.model.vocab_size
    from plasticlm.train import load_data

    return load_data(cfg, progress=not quiet).vocab_size
