"""Does any diagnostic move before the probe score does? (issue 15, item 5; the question
arXiv 2606.24752 left open: none of its three correlates tracked the onset reliably.)

Pure functions of a run's diagnostics.jsonl rows and its probe rows (``analysis.load_probes``: the
dAUC score per probe point, in task instances trained).

Per run and diagnostic column d (every numeric ``diag/...`` key):
- **Spearman correlation** (scipy.stats.spearmanr) of d with dAUC over the probe points that have
  both (at least 3, neither constant; otherwise None).
- **Change point** of d: the onset rule of ``onset.find_onset`` (window-3 centred moving average,
  the earliest minimum, censoring codes) applied to s * d, where s = +1 if d's Spearman correlation
  with dAUC is >= 0 and -1 otherwise. That is: a diagnostic that rises with the probe score turns
  where its smoothed curve is lowest, one that falls with it where its smoothed curve is highest:
  the diagnostic's own "onset", oriented the way it co-moves with the score. A change point is
  only an interior extremum (code ``onset``): a monotone diagnostic has its extremum at an end of
  its smoothed curve (code ``left_censored`` or ``still_improving``, which of the two depends only on
  the orientation) and so has no change point.
- **Lead/lag** = change point - onset of the probe score (``find_onset`` on dAUC over all probe
  points), in task instances: negative = the diagnostic turns *before* the score does (it leads).
  Defined when the diagnostic has a change point and the score an onset (``onset`` or, as the paper
  counts them, ``left_censored``); ``censored`` is True when the onset is left-censored (the true
  onset may be earlier, so the lead/lag may be smaller in magnitude or of the other sign).

Pooled over runs (sizes and seeds): the mean Spearman correlation and the mean lead/lag over the
runs that have them, each with a percentile bootstrap 95% CI over runs (runs drawn with
replacement; None with fewer than 2 runs), and how many runs' change points come before, at and
after their onset.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

from plasticlm.config import AnalysisConfig
from plasticlm.onset import find_onset

WINDOW = AnalysisConfig.window  # the onset rule's window (arXiv:2606.24752), as in [analysis]

_SETTING_SUFFIXES = ("/rank_n", "/rank_d", "/units", "/heads", "/h_max", "/query_start", "/seq_len", "/iters",
                     "/converged")


def diagnostic_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Numeric ``diag/`` keys of the rows, in order of first appearance (shapes and settings such as
    ``rank_n`` or ``h_max`` excluded: they are not diagnostics)."""
    seen: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if (k.startswith("diag/") and isinstance(v, int | float) and not isinstance(v, bool)
                    and not k.endswith(_SETTING_SUFFIXES)):
                seen.setdefault(k, None)
    return list(seen)


_PER_TENSOR = re.compile(r"\.(weight|bias)/(norm|drift)$")


def is_summary_column(key: str) -> bool:
    """A per-layer or global column (the report's table), not one per head or per parameter tensor."""
    return "/head" not in key and not _PER_TENSOR.search(key)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """(rho, p-value) of scipy.stats.spearmanr over the finite pairs; (None, None) with fewer than 3
    pairs or a constant side (the rank correlation is undefined)."""

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    from scipy.stats import spearmanr  # heavy (1.5 s): imported by every training process otherwise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def change_point(task_index: np.ndarray, values: np.ndarray, orientation: float, window: int = WINDOW):
    """``find_onset`` of orientation * values (module docstring): the diagnostic's turning point."""
    return find_onset(np.asarray(task_index, dtype=np.float64), orientation * np.asarray(values, np.float64), window)


def _by_task(rows: list[dict[str, Any]]) -> dict[float, dict[str, Any]]:
    return {float(r["task_index"]): r for r in sorted(rows, key=lambda r: r["task_index"])}


def analyse_run(diag_rows: list[dict[str, Any]], probe_rows: list[dict[str, Any]], window: int = WINDOW,
                columns: list[str] | None = None) -> dict[str, Any]:
    """Spearman correlation with dAUC and lead/lag against the onset, for every diagnostic column
    of one run (module docstring). ``probe_rows`` carry ``task_index`` and ``dauc``."""
    scores = {float(r["task_index"]): r["dauc"] for r in probe_rows if r.get("dauc") is not None}
    px = np.array(sorted(scores))
    onset = find_onset(px, np.array([scores[t] for t in px]), window) if px.size else None
    onset_x = None if onset is None else onset.onset_task_index
    diag = _by_task(diag_rows)
    dx = np.array(sorted(diag))
    out: dict[str, Any] = {}
    for col in columns or diagnostic_columns(diag_rows):
        y = np.array([np.nan if diag[t].get(col) is None else float(diag[t][col]) for t in dx])
        common = np.array([t in scores for t in dx], dtype=bool)
        rho, p = spearman(y[common], np.array([scores[t] for t in dx[common]]))
        res: dict[str, Any] = {"spearman": rho, "p": p, "n": int((common & np.isfinite(y)).sum()),
                               "change_point": None, "code": None, "lead": None, "censored": None}
        ok = np.isfinite(y)
        if rho is not None and ok.sum() >= 1:
            cp = change_point(dx[ok], y[ok], 1.0 if rho >= 0 else -1.0, window)
            res["code"] = cp.code
            if cp.code == "onset":
                res["change_point"] = cp.onset_task_index
                if onset_x is not None:
                    res["lead"] = float(cp.onset_task_index - onset_x)
                    res["censored"] = onset.code == "left_censored"
        out[col] = res
    return {"onset_task_index": onset_x, "onset_code": None if onset is None else onset.code,
            "points": int(dx.size), "columns": out}


def _boot_mean_ci(values: list[float], n_boot: int, rng: np.random.Generator,
                  level: float) -> list[float] | None:
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or n_boot < 1:
        return None
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return [float(np.quantile(means, a)), float(np.quantile(means, 1 - a))]


def pool_runs(per_run: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Pool ``analyse_run`` results of several runs: per column the mean Spearman rho and mean
    lead/lag with bootstrap CIs over runs, and the counts of runs whose change point comes before
    (lead < 0), at (0) and after (> 0) their onset."""
    columns: dict[str, None] = {}
    for r in per_run:
        columns.update(dict.fromkeys(r["columns"]))
    out = {}
    for col in columns:
        rng = np.random.default_rng(seed)  # the same draws for every column: comparable CIs
        rs = [r["columns"][col] for r in per_run if col in r["columns"]]
        rhos = [c["spearman"] for c in rs if c["spearman"] is not None]
        leads = [c["lead"] for c in rs if c["lead"] is not None]
        out[col] = {
            "runs": len(rs), "n_spearman": len(rhos),
            "spearman": float(np.mean(rhos)) if rhos else None,
            "spearman_ci95": _boot_mean_ci(rhos, n_boot, rng, level),
            "n_lead": len(leads), "lead": float(np.mean(leads)) if leads else None,
            "lead_ci95": _boot_mean_ci(leads, n_boot, rng, level),
            "before": sum(v < 0 for v in leads), "same": sum(v == 0 for v in leads),
            "after": sum(v > 0 for v in leads),
            "censored": sum(bool(c["censored"]) for c in rs if c["lead"] is not None),
        }
    return out
