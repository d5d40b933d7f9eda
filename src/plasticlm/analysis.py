"""Reading a run directory's probes: scores and the onset of plasticity loss with its bootstrap CI.

Scores (arXiv:2606.24752): ``dauc = 100 * (auc_k / auc_first - 1)`` relative to the run's first
probe, and ``dauc_scratch = 100 * (auc_k / auc_scratch - 1)`` relative to the scratch baseline.
The onset uses ``onset.find_onset`` on the dAUC curve against ``task_index`` (task instances
trained), and ``onset.onset_ci_from_curves`` on the per-sequence probe losses for the CI.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from plasticlm.config import load_config
from plasticlm.data.paths import home_dir
from plasticlm.errors import PlasticError
from plasticlm.onset import Onset, dauc, find_onset, onset_ci_from_curves, onset_document, seed_onset
from plasticlm.runlog import read_json, read_jsonl


def load_probes(run_dir: str | Path) -> list[dict[str, Any]]:
    """probes.jsonl rows sorted by task_index, with ``dauc`` (vs the first probe) added.

    Probes that diverged (a non-finite loss in the probe copy; ``auc`` null, ``diverged`` says why)
    have no score and are left out of the curve."""
    path = Path(run_dir) / "probes.jsonl"
    rows = []
    seen: dict[Any, int] = {}
    for n, r in enumerate(read_jsonl(path, strict=True), 1):
        if r.get("diverged"):
            continue
        bad = [k for k in ("task_index", "tokens_seen") if not _is_number(r.get(k))] + \
              ([] if _is_number(r.get("auc")) and r["auc"] > 0 else ["auc"])
        if bad:
            raise PlasticError(f"{path}: row {n} has no valid {', '.join(bad)} (a number, auc > 0): the file was "
                               "edited or corrupted; restore it or delete the row and run `plasticlm probe` again")
        if r["task_index"] in seen:
            raise PlasticError(f"{path}: rows {seen[r['task_index']]} and {n} both probe task_index "
                               f"{r['task_index']}; delete one of them")
        seen[r["task_index"]] = n
        rows.append(r)
    rows.sort(key=lambda r: r["task_index"])
    if rows:
        first = rows[0]["auc"]
        for r in rows:
            r["dauc"] = dauc(r["auc"], first)
    return rows


def probe_noise(rows: list[dict[str, Any]], smoothed: np.ndarray | None = None) -> dict[str, Any] | None:
    """How much a probe score moves between replicates of one checkpoint, beside the signal.

    From probe rows with ``replicate_aucs`` (``probe.replicates`` >= 2): ``sd_dauc`` is the pooled
    within-point standard deviation of a single replicate's score, in dAUC points (100 * sd / the
    first probe's AUC, the unit of the score curve); ``se_dauc`` = sd_dauc / sqrt(K) is the noise of
    the averaged score that the onset uses. ``signal_dauc`` is the range (max - min) of the smoothed
    score curve, and ``snr`` = signal_dauc / se_dauc. None without replicates."""
    reps = [r["replicate_aucs"] for r in rows if r.get("replicate_aucs") and len(r["replicate_aucs"]) >= 2]
    if not reps or not rows:
        return None
    k = min(len(a) for a in reps)
    var = float(np.mean([np.var(a, ddof=1) for a in reps]))
    sd = 100.0 * np.sqrt(var) / rows[0]["auc"]
    se = sd / np.sqrt(k)
    signal = None if smoothed is None or np.size(smoothed) == 0 else float(np.ptp(smoothed))
    return {"replicates": k, "points": len(reps), "sd_dauc": float(sd), "se_dauc": float(se),
            "signal_dauc": signal, "snr": None if signal is None or se == 0 else float(signal / se)}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)


def _curves(run_dir: Path, rows: list[dict]) -> tuple[list[np.ndarray], np.ndarray] | None:
    curves, steps = [], None
    for r in rows:
        path = run_dir / str(r.get("per_sequence"))
        if not r.get("per_sequence") or not path.exists():
            return None
        try:
            with np.load(path) as z:
                curves.append(z["per_sequence"].astype(np.float64))
                steps = z["eval_steps"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise PlasticError(f"{path}: unreadable per-sequence probe losses ({type(e).__name__}: {e}); delete "
                               f"it and its row in probes.jsonl, then run `plasticlm probe {run_dir}`") from None
    return curves, steps


def onset_from_run(run_dir: str | Path, window: int = 3, n_boot: int | None = None, seed: int = 0,
                   reference: str = "first") -> dict[str, Any]:
    """The `plasticlm onset RUN_DIR` document: onset in task instances and tokens, CI, smoothed curve.

    ``reference`` "first" scores against the run's first probe (the paper's figures), "scratch"
    against the scratch baseline (the paper's appendix).
    """
    return onset_of_run(run_dir, window, n_boot, seed, reference)[1]


def onset_of_run(run_dir: str | Path, window: int = 3, n_boot: int | None = None, seed: int = 0,
                 reference: str = "first") -> tuple[Onset, dict[str, Any]]:
    """``onset_from_run`` with the ``Onset`` it was computed from (for the human-readable table)."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.toml") if (run_dir / "config.toml").exists() else None
    rows = load_probes(run_dir)
    if not rows:
        raise PlasticError(
            f"{run_dir}: no probes yet (probes.jsonl is missing or empty): run `plasticlm probe {run_dir}`"
        )
    x = np.array([r["task_index"] for r in rows], dtype=np.float64)
    if reference == "scratch":
        if rows[0].get("scratch_auc") is None:
            raise PlasticError(f"{run_dir}: probes have no scratch baseline (probe.scratch_baseline = false)")
        y = np.array([r["dauc_scratch"] for r in rows])
    else:
        y = np.array([r["dauc"] for r in rows])
    result = find_onset(x, y, window)
    if n_boot is None:
        n_boot = cfg.probe.bootstrap if cfg is not None else 1000
    ci = None
    loaded = _curves(run_dir, rows)
    if loaded is not None and n_boot > 0 and len(rows) >= window + 2:
        curves, steps = loaded
        ref: int | np.ndarray = 0
        if reference == "scratch":
            scratch = _scratch_curve(run_dir, cfg.data.home if cfg is not None else "")
            ref = scratch if scratch is not None else 0
        ci = onset_ci_from_curves(curves, steps, x, reference=ref, window=window, n_boot=n_boot, seed=seed)
    doc = onset_document(result, str(run_dir), ci=ci)
    at = {r["task_index"]: r for r in rows}
    doc["onset_tokens"] = at[doc["onset_task_index"]]["tokens_seen"] if doc["onset_task_index"] is not None else None
    net = doc["net_degradation_task_index"]
    doc["net_degradation_tokens"] = at[net]["tokens_seen"] if net is not None else None
    doc["reference"] = reference
    doc["ci_fraction_null"] = None if ci is None else ci.fraction_null
    doc["probe_noise"] = probe_noise(rows, result.smoothed)
    doc["scores"] = [{"task_index": r["task_index"], "tokens_seen": r["tokens_seen"], "auc": r["auc"],
                      "dauc": r["dauc"], "dauc_scratch": r.get("dauc_scratch")} for r in rows]
    return result, doc


def _scratch_curve(run_dir: Path, home: str) -> np.ndarray | None:
    """Per-sequence losses of the scratch baseline recorded in run.json (from the cache), if present."""
    info_path = run_dir / "run.json"
    if not info_path.exists():
        return None
    scratch = read_json(info_path).get("scratch")
    if not scratch:
        return None
    path = home_dir(home) / "scratch" / scratch["npz"]
    if not path.exists():
        return None
    with np.load(path) as z:
        return z["per_sequence"].astype(np.float64)


def onset_of_seeds(run_dirs: list[str | Path], window: int = 3, n_boot: int = 1000, seed: int = 0,
                   reference: str = "first") -> dict[str, Any]:
    """The onset of one size from its runs (seeds): ``onset.seed_onset`` on their dAUC curves.

    The curves are taken at the probe points every run has (a diverged probe drops its point for
    all seeds). Returns ``SeedOnset.to_json()`` plus ``task_index`` (those points), ``onset_tokens``
    and ``runs``. Raises ``PlasticError`` when a run has no probes or the runs share fewer than
    ``window`` + 1 probe points."""
    key = "dauc_scratch" if reference == "scratch" else "dauc"
    curves = []
    for d in run_dirs:
        rows = load_probes(d)
        if not rows:
            raise PlasticError(f"{d}: no probes yet (probes.jsonl is missing or empty)")
        curves.append({r["task_index"]: (r[key], r["tokens_seen"]) for r in rows})
    common = sorted(set.intersection(*(set(c) for c in curves)))
    if len(common) < window + 1:
        raise PlasticError(f"the runs share {len(common)} probe point(s); an onset needs at least {window + 1}")
    scores = np.array([[c[t][0] for t in common] for c in curves], dtype=np.float64)
    res = seed_onset(common, scores, window=window, n_boot=n_boot, seed=seed)
    doc = res.to_json()
    onset = doc["onset_task_index"]
    doc["onset_tokens"] = None if onset is None else curves[0][onset][1]
    doc["task_index"] = common
    doc["runs"] = [str(d) for d in run_dirs]
    return doc
