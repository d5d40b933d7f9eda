"""The report's "Diagnostics" section: what the runs' diagnostics.jsonl say beside the probe score.

Shown only when some run has a diagnostics.jsonl (`plasticlm diagnose`). Per-layer heatmaps over
training (MLP dormancy, effective rank of the MLP features), per-head attention entropy, parameter
magnitude; the table of every per-layer and global diagnostic's Spearman correlation with the probe
score and its lead/lag against the onset, pooled over runs with bootstrap CIs
(``diagnostics_analysis``); and the forgetting of each training language (``forgetting``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plasticlm.diagnostics_analysis import analyse_run, is_summary_column, pool_runs
from plasticlm.forgetting import forgetting_matrix
from plasticlm.report import figures as F
from plasticlm.report.context import Context
from plasticlm.report.html import Block, Note, Paragraph, Section, Table
from plasticlm.report.load import RunData
from plasticlm.report.select import fit_runs

MAX_PANELS = 9
"""Runs drawn in each figure (the smallest first); a note says how many more the table pools."""
N_BOOT = 1000
"""Bootstrap draws over runs for the CIs of the correlation / lead-lag table."""


@dataclass
class Heatmap:
    """One run's (rows x probe points) map: ``z[i][j]`` = row i at ``x[j]`` task instances."""

    title: str
    x: Sequence[float]
    rows: list[str]
    z: np.ndarray
    onset: float | None = None


def _layer_keys(rows: list[dict], pattern: str) -> list[tuple[str, str]]:
    """(label, key) of the keys matching ``pattern`` (with one group: the row label), in order."""
    found: dict[str, str] = {}
    for r in rows:
        for k in r:
            m = re.fullmatch(pattern, k)
            if m:
                found.setdefault(k, m.group(1))
    return [(label, k) for k, label in found.items()]


def _heatmap(run: RunData, pattern: str, denominator: Callable[[dict, str], float | None] | None = None,
             relabel: Callable[[str], str] = str) -> Heatmap | None:
    """The run's map of the keys matching ``pattern`` (one group: the row label), each value divided
    by ``denominator(row, key)`` when given (e.g. the layer's feature count, H_max); None without keys."""
    rows = sorted(run.diagnostics, key=lambda r: r["task_index"])
    keys = _layer_keys(rows, pattern)
    if not keys:
        return None

    def value(r: dict, k: str) -> float:
        v = r.get(k)
        den = 1.0 if denominator is None else denominator(r, k)
        return np.nan if v is None or not den else float(v) / float(den)

    z = np.array([[value(r, k) for r in rows] for _, k in keys])
    onset = run.onset.onset_task_index if run.onset is not None else None
    return Heatmap(f"{run.label} ({run.stream})", [r["task_index"] for r in rows], [relabel(lbl) for lbl, _ in keys],
                   z, onset)


def plot_heatmaps(maps: Sequence[Heatmap], path: str | Path, *, title: str, label: str,
                  vmin: float | None = None, vmax: float | None = None) -> Path:
    """Rows (layers or heads) x probe points, one panel per run, a shared colour scale, the onset as a
    dash-dot line between columns when it is a probe point."""
    fig, axes = F._figure(len(maps))
    finite = np.concatenate([m.z[np.isfinite(m.z)] for m in maps]) if maps else np.empty(0)
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    image = None
    for ax, m in zip(axes, maps):
        image = ax.imshow(np.ma.masked_invalid(m.z), aspect="auto", origin="lower", vmin=lo, vmax=max(hi, lo + 1e-12),
                          cmap="viridis", interpolation="nearest")
        step = max(1, len(m.x) // 8)
        ax.set_xticks(range(0, len(m.x), step), [f"{v:g}" for v in list(m.x)[::step]])
        rstep = max(1, len(m.rows) // 12)
        ax.set_yticks(range(0, len(m.rows), rstep), m.rows[::rstep])
        if m.onset is not None and m.onset in list(m.x):
            ax.axvline(list(m.x).index(m.onset), color="white", ls="-.", lw=1.5)
        ax.set_title(m.title, fontsize=10)
        ax.set_xlabel("task instances trained (probe points)", fontsize=9)
        ax.tick_params(labelsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, label=label, shrink=0.9)
    fig.suptitle(title, fontsize=11)
    return F._save(fig, path)


def plot_lines(series: Sequence[tuple[str, Sequence[float], Sequence[float], float | None]], path: str | Path, *,
               title: str, ylabel: str) -> Path:
    """One line per run over task instances, its onset marked with a diamond on the line."""
    fig, (ax,) = F._figure(1, ncols=1)
    for i, (label, x, y, onset) in enumerate(series):
        c = f"C{i % 10}"
        ax.plot(x, y, "-o", ms=3, lw=1.2, color=c, label=label)
        if onset is not None and onset in list(x):
            ax.plot([onset], [list(y)[list(x).index(onset)]], "D", ms=8, color=c, mec="black",
                    label=f"{label}: onset")
    ax.set_xlabel("task instances trained", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    F._legend_below(fig, [ax])
    fig.suptitle(title, fontsize=11)
    return F._save(fig, path)


def _fmt(v: float | None, spec: str = "+.2f") -> str:
    return "-" if v is None else format(v, spec)


def _ci(ci: list[float] | None, spec: str = "+.2f") -> str:
    return "-" if not ci else f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def _correlation_table(runs: list[RunData], n_boot: int, window: int) -> list[Block]:
    usable = [r for r in runs if r.diagnostics and r.probes]
    if not usable:
        return [Note("No run has both diagnostics and probes, so no diagnostic can be compared with the probe "
                     "score: run `plasticlm probe RUN_DIR`.")]
    per_run = [analyse_run(r.diagnostics, r.probes, window) for r in usable]
    pooled = pool_runs(per_run, n_boot=n_boot)
    cols = [c for c in pooled if is_summary_column(c) and pooled[c]["n_spearman"] > 0]
    cols.sort(key=lambda c: -abs(pooled[c]["spearman"]))
    rows = [[c.removeprefix("diag/"), str(pooled[c]["runs"]), _fmt(pooled[c]["spearman"]),
             _ci(pooled[c]["spearman_ci95"]), _fmt(pooled[c]["lead"], "+.3g"), _ci(pooled[c]["lead_ci95"], "+.3g"),
             f"{pooled[c]['before']} / {pooled[c]['same']} / {pooled[c]['after']}", str(pooled[c]["censored"])]
            for c in cols]
    onsets = sum(p["onset_task_index"] is not None for p in per_run)
    if not rows:
        return [Note(f"No diagnostic could be correlated with the probe score: a Spearman correlation needs at "
                     f"least 3 probe points with both a probe and a diagnostics row and a diagnostic that varies "
                     f"(the runs have {', '.join(str(p['points']) for p in per_run)} diagnosed point(s)).")]
    return [
        Table(["diagnostic", "runs", "mean Spearman rho with dAUC", "95% CI over runs",
               "mean lead/lag (task instances)", "95% CI over runs", "change point before / at / after onset",
               "censored"], rows,
              caption=f"Diagnostics against the probe score ({len(usable)} run(s) with diagnostics and probes, "
                      f"{onsets} with an onset)"),
        Paragraph("Spearman rho: rank correlation of the diagnostic with dAUC over the probe points that have both "
                  "(per run; mean over runs). Change point: the onset rule applied to the diagnostic (earliest "
                  f"minimum of its window-{window} moving average; of its negative when rho < 0, so a diagnostic "
                  "that falls as the score rises turns at its maximum). Lead/lag = change point - onset of the "
                  "probe score, in task instances: negative means the diagnostic turns before the probe score "
                  "does. A monotone diagnostic has no interior extremum, so no change point and no lead/lag. "
                  "Censored: runs whose onset is left-censored (the difference is then not exact). CIs: percentile "
                  "bootstrap over runs ('-' with fewer than 2). Rows by decreasing |rho|; per-head and "
                  "per-tensor columns are in diagnostics.jsonl and `plasticlm diagnose RUN_DIR --json`."),
    ]


def _forgetting_table(runs: list[RunData]) -> list[Block]:
    docs = []
    for r in runs:
        langs = list(r.config.stream.languages) if r.config else None
        try:
            doc = forgetting_matrix(r.metrics, None, langs if r.stream == "continual" else None)
        except ValueError:
            continue
        docs.append((r, doc))
    if not docs:
        return []
    langs: list[str] = []
    for _, d in docs:
        langs += [x for x in d["trained"] if x not in langs]
    if not langs:
        return []
    rows = []
    for r, d in docs:
        cells = [_fmt((d["summary"].get(x) or {}).get("forgetting"), "+.3f") if x in d["trained"] else "-"
                 for x in langs]
        rows.append([f"{r.label} ({r.stream})", *cells, _fmt(d["mean_forgetting"], "+.3f")])
    return [Table(["run", *langs, "mean"], rows,
                  caption="Forgetting: final validation bits per byte minus the language's best before the end"),
            Paragraph("Forgetting beside plasticity: for each training language, its validation bpb after the last "
                      "task minus its lowest bpb at any earlier evaluation (positive: bits per byte lost while "
                      "the other languages were trained). The full matrix (bpb of every language after every "
                      "task) and the mean change of language i over a task of language j are in "
                      "`plasticlm diagnose RUN_DIR --json` (forgetting).")]


def diagnostics(ctx: Context) -> Section | None:
    """The Diagnostics section (module docstring); None when no run has diagnostics.jsonl."""
    runs = [r for r in ctx.inp.runs if r.diagnostics]
    if not runs:
        return None
    runs.sort(key=lambda r: (r.stream != "continual", r.params or 0, r.seed or 0))
    drawn = runs[:MAX_PANELS]
    blocks: list[Block] = []
    maps = [m for m in (_heatmap(r, r"diag/blocks\.(\d+)\.mlp/dormant") for r in drawn) if m]
    if maps:
        blocks.append(ctx.figure(
            "fig-diag-dormancy.png",
            lambda p: plot_heatmaps(maps, p, title="Dormant MLP units per layer", label="dormant fraction", vmin=0),
            "Heatmaps of the dormant fraction of MLP units per layer over training, one panel per run",
            "Fraction of dormant MLP hidden units per layer (rows: block index) at each probe point: a unit is "
            "dormant when its mean |activation| over held-out probe-language tokens is at most 0.01 of its "
            "layer's mean (Sokar et al. 2023; eps 0.01 as in arXiv:2606.24752). Dash-dot line: the onset."))
    maps = [m for m in (_heatmap(r, r"diag/blocks\.(\d+)\.mlp/effective_rank",
                                 lambda row, k: row.get(k.rsplit("/", 1)[0] + "/rank_d")) for r in drawn) if m]
    if maps:
        blocks.append(ctx.figure(
            "fig-diag-erank.png",
            lambda p: plot_heatmaps(maps, p, title="Effective rank of the MLP features per layer",
                                    label="effective rank / features", vmin=0),
            "Heatmaps of the effective rank of the MLP hidden features per layer over training",
            "Effective rank (Roy & Vetterli 2007) of each layer's MLP hidden features on held-out probe-language "
            "tokens, divided by the number of features (1 = full rank). Dash-dot line: the onset."))
    maps = [m for m in (_heatmap(r, r"diag/blocks\.(\d+\.attn/entropy/head\d+)",
                                 lambda row, k: row.get("diag/attn/h_max"),
                                 lambda lbl: lbl.replace(".attn/entropy/head", " h")) for r in drawn) if m]
    if maps:
        blocks.append(ctx.figure(
            "fig-diag-entropy.png",
            lambda p: plot_heatmaps(maps, p, title="Attention entropy per head", label="entropy / H_max",
                                    vmin=0, vmax=1),
            "Heatmaps of attention entropy per head over training",
            "Attention entropy of each head (rows: block and head) over the query window, divided by the "
            "entropy of uniform causal attention H_max, on held-out windows of a training language: above 0.9 "
            "a head is lazy, below 0.1 collapsed (arXiv:2606.24752). Dash-dot line: the onset."))
    series = []
    for r in drawn:
        rows = sorted((x for x in r.diagnostics if x.get("diag/params/mean_abs") is not None),
                      key=lambda x: x["task_index"])
        if rows:
            series.append((f"{r.label} ({r.stream})", [x["task_index"] for x in rows],
                           [x["diag/params/mean_abs"] for x in rows], r.onset.onset_task_index if r.onset else None))
    if series:
        blocks.append(ctx.figure(
            "fig-diag-params.png",
            lambda p: plot_lines(series, p, title="Parameter magnitude", ylabel="mean |theta| (non-embedding)"),
            "Mean absolute non-embedding parameter over training, one line per run",
            "Mean |theta| over all non-embedding parameters pooled (Dohare et al. 2024; arXiv:2606.24752), "
            "at each diagnosed probe point; diamonds: the onset."))
    if len(runs) > MAX_PANELS:
        blocks.append(Note(f"Figures show {MAX_PANELS} of {len(runs)} runs with diagnostics (the smallest first); "
                           "the table pools all of them."))
    fitted = {r.name for r in fit_runs(ctx.inp)}  # the onset's runs, as in the fit (runspec.in_scaling_fit)
    blocks += _correlation_table([r for r in runs if r.name in fitted] or runs, N_BOOT, ctx.inp.window)
    blocks += _forgetting_table(runs)
    return Section("diagnostics", "Diagnostics", blocks)
