"""The report's comparison of mitigations (a study with ``sweep.methods``, `plasticlm compare`): the
seed-averaged probe-score curve of every method per size, and the table of compare.csv."""

from __future__ import annotations

import numpy as np

from plasticlm.compare import read_compare
from plasticlm.config import BASELINE_METHOD
from plasticlm.errors import PlasticError
from plasticlm.onset import moving_average
from plasticlm.report import figures as F
from plasticlm.report.context import Context
from plasticlm.report.html import Block, Note, Section, Table
from plasticlm.report.load import RunData
from plasticlm.report.prose import interval, ti
from plasticlm.report.select import by_size
from plasticlm.units import num


def _mean_curve(group: list[RunData], window: int) -> tuple[list[float], np.ndarray, list[float], np.ndarray]:
    """(x, the seeds' mean dAUC, smoothed x, its moving average) at the probe points every run has."""
    curves = [dict(zip(r.column("task_index").tolist(), r.column("dauc").tolist())) for r in group]
    common = sorted(set.intersection(*(set(c) for c in curves)))
    y = np.array([[c[t] for t in common] for c in curves]).mean(axis=0) if common else np.array([])
    h = (window - 1) // 2
    return common, y, common[h: len(common) - h], moving_average(y, window)


def comparison(ctx: Context) -> Section | None:
    """Probe-score curves per method (seed means) and the comparison table, for a study with a method axis."""
    inp = ctx.inp
    kind = inp.config.stream.kind if inp.config is not None else None
    runs = [r for r in inp.runs if r.method is not None and r.probes and (kind is None or r.stream == kind)]
    if not runs:
        return None
    panels = []
    for preset, rs in by_size(runs):
        series = []
        for method in dict.fromkeys(r.method for r in rs):
            group = [r for r in rs if r.method == method]
            x, y, sx, sy = _mean_curve(group, inp.window)
            z = next((z for z in inp.sizes if (z.preset, z.method, z.stream) == (preset, method, group[0].stream)),
                     None)
            series.append(F.ScoreSeries(f"{method} ({len(group)} seed{'s' if len(group) > 1 else ''})", x, y, sx, sy,
                                        z.onset_task_index if z else None, z.runs_ci95 if z else None,
                                        dashed=method == BASELINE_METHOD))
        panels.append(F.ScorePanel(preset, series))
    blocks: list[Block] = [ctx.figure(
        "fig-compare-scores.png",
        lambda p: F.plot_score_panels(panels, p, title="Probe score per mitigation (mean over seeds)",
                                      xlabel="task instances trained", tasks_per_cycle=runs[0].tasks_per_cycle),
        "Seed-averaged probe score dAUC over task instances for each method and size",
        "dAUC of each method averaged over its seeds at the probe points they share (dashed: the baseline), its "
        f"window-{inp.window} moving average, and the onset of that averaged curve with its 95% bootstrap CI over "
        "seeds (sizes.csv). Every method reads the same training tokens and gets the same probes.",
    )]
    try:
        table = read_compare(inp.root / "compare.csv") if (inp.root / "compare.csv").exists() else []
    except PlasticError as e:
        blocks.append(Note(inp.rel(str(e))))
        table = []
    if table:
        rows = [[r.preset, r.method, str(r.n_seeds),
                 ("<= " if r.onset_code == "left_censored" else "") + ti(r.onset_task_index)
                 if r.onset_task_index is not None else (r.onset_code or "-"),
                 interval(None if r.onset_ci95_low is None else (r.onset_ci95_low, r.onset_ci95_high)),
                 num(r.p_onset), num(r.dauc_last), num(r.auc_dauc), num(r.p_auc_dauc),
                 " ".join(f"{lang} {num(v, '.3f')}" for lang, v in r.final_bpb), num(r.mean_forgetting),
                 "-" if r.extra_flops_fraction is None else f"{100 * r.extra_flops_fraction:.2g}%",
                 "-" if r.wall_overhead is None else f"{100 * r.wall_overhead:+.0f}%"] for r in table]
        blocks.append(Table(
            ["preset", "method", "seeds", "onset (task instances)", "95% CI over seeds", "p (onset)",
             "dAUC at the last probe", "area under dAUC", "p (area)", "final val. bpb", "mean forgetting (bpb)",
             "extra FLOPs per step", "wall time vs baseline"], rows,
            caption="compare.csv: per method over seeds; p: Welch t-test against the baseline (two-sided)"))
    return Section("comparison", "Mitigations compared", blocks)
