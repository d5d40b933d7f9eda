"""Forgetting beside plasticity: what each language keeps while the others are trained.

Pure functions of a run's ``metrics.jsonl`` rows: the evaluator (``components.core.Evaluator``)
writes ``val/<lang>/bpb`` before training (``task_index`` -1) and after every ``eval.every_tasks``
tasks (``task_index`` = the 0-based task just trained). Bits per byte make languages comparable
whatever their tokenizer compression (nanochat).

- ``matrix[r][c]``: validation bpb of language c after ``tasks[r]`` task instances (0 = before
  training; the unit of probes.jsonl's ``task_index``), None where not evaluated.
- ``forgetting`` of language c (Chaudhry et al. 2018, "Riemannian Walk", arXiv 1801.10112, written
  for a loss): final bpb - best (lowest) bpb over the rows before the last; positive = bits per
  byte lost since the language was at its best. ``relative`` = forgetting / best. ``max_forgetting``
  = the largest bpb - best at any row after the best (the deepest trough of the sawtooth).
- ``change[i][j]`` ("how much of language i survives training on j"): the mean change of language
  i's bpb over one task instance of language j, from pairs of consecutive rows (task instances
  k - 1 and k both evaluated). The diagonal is learning (negative), the off-diagonal forgetting
  (positive) or transfer (negative).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from plasticlm.config import load_config
from plasticlm.errors import PlasticError
from plasticlm.runlog import read_jsonl


def _languages(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k.startswith("val/") and k.endswith("/bpb"):
                seen.setdefault(k[4:-4], None)
    return list(seen)


def forgetting_matrix(metrics: list[dict[str, Any]], languages: list[str] | None = None,
                      trained: list[str] | None = None) -> dict[str, Any]:
    """The per-language bpb matrix after each task and the forgetting summary (module docstring).

    ``languages``: the column order (default: as they appear in the rows); ``trained``: the training
    languages (default: every language some row's ``lang`` names), over which ``mean_forgetting`` is
    averaged (the probe language is a column but never trained, so its change is drift, not forgetting).
    Raises ``PlasticError`` when no row holds a validation bpb."""
    evals = [r for r in metrics if any(k.startswith("val/") and k.endswith("/bpb") for k in r)]
    if not evals:
        raise PlasticError("no validation evaluation in the metrics (val/<lang>/bpb rows); eval.every_tasks = 0?")
    langs = list(languages) if languages else _languages(evals)
    by_task: dict[int, dict[str, Any]] = {}
    for r in evals:  # a later row at the same task (a resumed evaluation) replaces the earlier one
        by_task[int(r.get("task_index", -1)) + 1] = r
    tasks = sorted(by_task)
    matrix = [[by_task[t].get(f"val/{lang}/bpb") for lang in langs] for t in tasks]
    task_lang = {int(r["task_index"]) + 1: r.get("lang") for r in metrics
                 if r.get("task_index", -1) >= 0 and r.get("lang") is not None}
    trained = list(trained) if trained is not None else [x for x in langs if x in set(task_lang.values())]

    summary = {}
    for c, lang in enumerate(langs):
        y = np.array([np.nan if row[c] is None else float(row[c]) for row in matrix])
        ok = np.flatnonzero(np.isfinite(y))
        if ok.size < 2:
            summary[lang] = None
            continue
        before = ok[:-1]
        b = before[np.argmin(y[before])]
        final = float(y[ok[-1]])
        after = ok[ok > b]
        summary[lang] = {"best": float(y[b]), "best_task_index": tasks[b], "final": final,
                         "forgetting": final - float(y[b]), "relative": (final - float(y[b])) / float(y[b]),
                         "max_forgetting": float(np.max(y[after]) - y[b]), "trained": lang in trained}

    change: dict[str, dict[str, float | None]] = {}
    trained_order = [x for x in dict.fromkeys(task_lang[t] for t in sorted(task_lang))]
    for c, lang in enumerate(langs):
        sums: dict[str, list[float]] = {j: [] for j in trained_order}
        for r in range(1, len(tasks)):
            t = tasks[r]
            if tasks[r - 1] != t - 1 or matrix[r][c] is None or matrix[r - 1][c] is None or t not in task_lang:
                continue
            sums[task_lang[t]].append(float(matrix[r][c]) - float(matrix[r - 1][c]))
        change[lang] = {j: (float(np.mean(v)) if v else None) for j, v in sums.items()}

    per_trained = [summary[x]["forgetting"] for x in trained if summary.get(x)]
    return {"languages": langs, "trained": trained, "tasks": tasks, "matrix": matrix, "summary": summary,
            "mean_forgetting": float(np.mean(per_trained)) if per_trained else None,
            "change": change, "change_columns": trained_order}


def forgetting_from_run(run_dir: str | Path) -> dict[str, Any] | str:
    """``forgetting_matrix`` of a run directory (columns: the training languages in stream order, then
    the others), or a sentence saying why there is none."""

    run_dir = Path(run_dir)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    order = None
    trained = None
    if (run_dir / "config.toml").exists():
        cfg = load_config(run_dir / "config.toml")
        present = _languages(metrics)
        if cfg.stream.kind == "continual":
            trained = [x for x in cfg.stream.languages if x in present]
        order = [x for x in cfg.stream.languages if x in present] + \
                [x for x in present if x not in cfg.stream.languages]
    try:
        return forgetting_matrix(metrics, order, trained)
    except PlasticError as e:
        return f"{run_dir}: {e}"
