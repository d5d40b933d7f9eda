"""The report's sections, each a function of what was read (``ReportInput``): figures and tables.

A section function returns a ``Section``, a ``Skipped`` (the section applies but its inputs are
missing: the summary says so) or None (it does not apply to this kind of directory). Which runs and
numbers a section shows comes from ``select``, its sentences and number formats from ``prose``.
Adding a section means writing one function and adding it to ``SECTIONS`` (the comparison of
mitigations is one, in compare_section.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from plasticlm.report import figures as F
from plasticlm.report.compare_section import comparison
from plasticlm.report.context import Context, Skipped
from plasticlm.report.diagnostics_section import diagnostics
from plasticlm.report.html import Block, Bullets, Note, Paragraph, Section, Table
from plasticlm.report.load import RunData
from plasticlm.report.prose import interval, params, plural, seed_onsets, summary, ti, tokens
from plasticlm.report.select import (
    bpb_curves,
    by_size,
    cycle_boundaries,
    fit_points,
    fit_runs,
    onset_bounds,
    report_order,
    stale_fit,
    stationary_pairs,
)
from plasticlm.units import num, si

FORM_ORDER = ("power", "linear", "linear_log", "exponential")


def _panel_title(preset: str, runs: list[RunData]) -> str:
    p = runs[0].params
    return preset if p is None else f"{preset}: {p:,} non-embedding params"


def _score_series(run: RunData, label: str, x_key: str, dashed: bool = False) -> F.ScoreSeries:
    sx, sy = run.smoothed("dauc", x_key)
    o = run.onset
    onset = ci = net = None
    if o is not None:
        if x_key == "task_index":
            onset, ci = o.onset_task_index, o.seq_ci95
        else:
            onset = o.onset_tokens
            if o.seq_ci95 is not None:
                lo, hi = run.tokens_at(o.seq_ci95[0]), run.tokens_at(o.seq_ci95[1])
                ci = (lo, hi) if lo is not None and hi is not None else None
            net = o.net_degradation_tokens
    return F.ScoreSeries(label, run.column(x_key), run.column("dauc"), sx, sy, onset, ci, net, dashed)


def probe_scores(ctx: Context) -> Section | Skipped | None:
    """Figure 2 of arXiv:2606.24752: dAUC over task instances, one panel per size, onset marked."""
    title = "Probe score over training"
    runs = fit_runs(ctx.inp)
    probed = [r for r in runs if r.probes] or [r for r in ctx.inp.runs if r.probes]
    if not probed:
        return Skipped(title, "no run has probes yet (probes.jsonl is missing or empty); run `plasticlm probe RUN_DIR`")
    panels = [F.ScorePanel(_panel_title(preset, rs),
                           [_score_series(r, f"seed {r.seed}" + ("" if r.stream == "continual" else f" ({r.stream})"),
                                          "task_index") for r in rs])
              for preset, rs in by_size(probed)]
    tpc = probed[0].tasks_per_cycle
    blocks: list[Block] = [ctx.figure(
        "fig-probe-scores.png",
        lambda p: F.plot_score_panels(panels, p, title="Plasticity probe score over training",
                                      xlabel="task instances trained", tasks_per_cycle=tpc),
        "Probe score dAUC over task instances for each model size",
        "Probe score dAUC_k = 100 (AUC_k / AUC_1 - 1): the area under the probe's validation-loss curve "
        "against the same run's first probe (positive: the model learns the held-out probe language more "
        f"slowly than at its first probe). Points: probes; thick line: centred window-{ctx.inp.window} moving average; "
        "dash-dot line: the onset, the interior minimum of the moving average (shaded: 95% bootstrap CI "
        "over validation sequences). As Figure 2 of arXiv:2606.24752.",
    )]
    missing = [r.label for r in runs if not r.probes]
    if missing:
        blocks.append(Note(f"No probes yet for: {', '.join(missing)}."))
    return Section("probe-scores", title, blocks)


def onsets(ctx: Context) -> Section | Skipped | None:
    title = "Onsets"
    runs = [r for r in ctx.inp.runs if r.onset is not None or r.probes]
    if not runs:
        return Skipped(title, "no run has probes or an onset yet")
    with_method = any(r.method for r in runs)  # a study with a method axis (plasticlm compare)
    rows = []
    for r in sorted(runs, key=report_order):
        o = r.onset
        ci_tok = None
        if o is not None and o.seq_ci95 is not None:
            ci_tok = (r.tokens_at(o.seq_ci95[0]), r.tokens_at(o.seq_ci95[1]))
        note = "" if o is None or o.code in (None, "onset") else r.onset_reason or ""
        rows.append([r.name, r.preset or "-", r.stream or "-", *([r.method or "-"] if with_method else []),
                     params(r.params), ti(r.seed), str(len(r.probes)),
                     ti(o.onset_task_index) if o else "-", interval(o.seq_ci95) if o else "-",
                     tokens(o.onset_tokens) if o else "-", interval(ci_tok, tokens),
                     tokens(o.net_degradation_tokens) if o else "-", note])
    cols = ["run", "preset", "stream", *(["method"] if with_method else []), "non-embedding params", "seed",
            "probes", "onset (task instances)",
            "95% CI over val. sequences", "onset (tokens)", "95% CI (tokens)", "net degradation (tokens)", "note"]
    src = " and ".join(sorted({r.onset_source for r in runs if r.onset_source})) or "no onset computed"
    blocks: list[Block] = [
        Table(cols, rows, caption=f"Onset of plasticity loss per run ({src})"),
        Paragraph(f"Onset: the probe point (task instances trained) at the earliest minimum of the "
                  f"window-{ctx.inp.window} moving average of dAUC (arXiv:2606.24752). A minimum at the first "
                  "smoothed point is an onset at or before it (left-censored, as the paper's smallest models); one "
                  "at the last smoothed point is no onset yet (a lower bound). 95% CI over validation sequences: "
                  "bootstrap over the probe language's validation sequences; it measures evaluation noise only, "
                  "not training noise. Net "
                  "degradation: the first probe after the minimum whose smoothed dAUC is above 0."),
    ]
    sizes = [z for z in ctx.inp.sizes if z.n_seeds > 0]
    if sizes:
        blocks.append(Table(
            ["preset", "stream", "non-embedding params", "seeds", "onset of the mean curve (task instances)",
             "95% CI over runs", "seeds' onsets", "seeds agree"],
            [[z.preset, z.stream, params(z.non_embedding_params), str(z.n_seeds),
              ("<= " if z.censored == "left" else "") + ti(z.onset_task_index) if z.onset_task_index is not None
              else (f">= {ti(z.lower_bound_task_index)}" if z.lower_bound_task_index is not None else "none"),
              interval(z.runs_ci95), seed_onsets(z),
              "-" if z.seeds_agree is None or z.n_seeds < 2 else ("yes" if z.seeds_agree else "no")]
             for z in sorted(sizes, key=lambda z: (z.stream != "continual", z.non_embedding_params))],
            caption="Onset per size from its seeds (sizes.csv): the onset of the seed-averaged dAUC curve and a "
                    "bootstrap over runs, which includes training noise"))
    return Section("onsets", title, blocks)


def _onset_bounds_figure(ctx: Context) -> list[Block]:
    """What the fit's runs say about onset vs size without a fit (``select.onset_bounds``)."""
    found, later, earlier = onset_bounds(ctx.inp)
    if not (found or later or earlier):
        return []
    return [ctx.figure(
        "fig-onset-bounds.png", lambda p: F.plot_onset_bounds(found, later, earlier, p),
        "Onsets and onset bounds versus non-embedding parameters",
        "Onset T (task instances) against non-embedding parameters P, log-log, for the continual runs: "
        "circles are onsets with their 95% CI over validation sequences; an up-pointing triangle marks a run "
        "whose smoothed score was still falling at its last probe (its onset, if any, comes later); a "
        "down-pointing one a left-censored onset (at or before its first smoothed probe). Too few onsets for "
        "the power law of Figure 3 of "
        "arXiv:2606.24752.",
    )]


def scaling(ctx: Context) -> Section | Skipped | None:
    """Figure 3 of arXiv:2606.24752 and the fit statistics of every form."""
    inp = ctx.inp
    if inp.kind != "study":
        return None
    title = "Onset vs model size"
    P, _ = fit_points(inp)
    n_sizes = len(set(P))
    have = f"Onsets exist for {plural(len(P), 'run')} at {plural(n_sizes, 'size')}."
    if inp.fit is None:
        return Section("scaling", title, [Note(f"No scaling-law fit: {inp.fit_note}. {have}"),
                                          *_onset_bounds_figure(ctx)])
    fit = inp.fit
    blocks: list[Block] = []
    if n_sizes >= 3:
        blocks.append(ctx.figure(
            "fig-onset-fit.png", lambda p: F.plot_onset_fit(fit, p),
            "Onset versus non-embedding parameters with the fitted power law",
            "Onset T (task instances) against non-embedding parameters P, log-log: the runs' onsets, the power "
            "law T = a P^b fitted by OLS on (ln P, ln T) with its 95% confidence band, and extrapolated onsets "
            "with 95% prediction intervals (all from fit.json). As Figure 3 of arXiv:2606.24752.",
        ))
    else:
        blocks.append(Note(f"The runs hold too few onsets to draw a power law (3 sizes needed). {have}"))
        blocks += _onset_bounds_figure(ctx)
    stale = stale_fit(inp)
    if stale is not None:
        blocks.append(Note(
            f"fit.json was fitted to {stale[0]} onsets, but onsets.csv now gives the fit {stale[1]} onsets (or other "
            "values): the figure, the tables and the summary show fit.json. Run `plasticlm sweep CONFIG --no-train` "
            "to bring fit.json up to date."))
    rows, best_rows = [], set()
    forms = [f for f in FORM_ORDER if f in fit.fits] + [f for f in fit.fits if f not in FORM_ORDER]
    for i, name in enumerate(forms):
        f = fit.fits[name]
        if name == fit.best_by_loo:
            best_rows.add(i)
        rows.append([name, f.law, num(f.a), num(f.b, ".4g"), num(f.b_se, ".3g"),
                     interval(f.b_ci95, lambda v: num(v, ".4g")),
                     interval(f.b_boot95, lambda v: num(v, ".4g")) if name == "power" else "-",
                     num(f.r2, ".3f"), num(f.rmse), num(f.loo_rmse), "best" if name == fit.best_by_loo else ""])
    blocks.append(Table(
        ["form", "law", "a", "b", "b_se", "b 95% CI (OLS)", "b 95% CI (bootstrap over sizes)", "R^2",
         "RMSE (task instances)", "LOO RMSE (task instances)", "by LOO RMSE"], rows,
        caption=f"Scaling-law fits (fit.json; n = {fit.params.size} onsets)", best_rows=best_rows))
    blocks.append(Paragraph(
        "b_se and the OLS CI: in the fitted (transformed) space with n - 2 degrees of freedom; R^2, RMSE and the "
        "leave-one-out RMSE (refit without each size, predict it) in task instances, as in arXiv:2606.24752. "
        "The highlighted form predicts held-out sizes best."))
    if fit.extrapolations:
        blocks.append(Table(
            ["non-embedding params", "onset (task instances)", "95% PI (task instances)", "onset (tokens)",
             "95% PI (tokens)"],
            [[si(e.params), num(e.onset), interval(e.pi95, num), tokens(e.tokens), interval(e.tokens_pi95, tokens)]
             for e in fit.extrapolations],
            caption="Power-law extrapolation of the onset (95% prediction intervals)"))
    return Section("scaling", title, blocks)


def stationary(ctx: Context) -> Section | Skipped | None:
    """Continual vs stationary stream, x = tokens (the paper's 27M: net-negative at ~320B vs ~475B)."""
    inp = ctx.inp
    if inp.kind != "study":
        return None
    title = "Continual vs stationary"
    if not [r for r in inp.runs if r.stream == "stationary"]:
        return Skipped(title, "no stationary run in this study (sweep.stationary = false)")
    pairs = stationary_pairs(inp)
    if not pairs:
        return Skipped(title, "no continual/stationary pair of the same size and seed has probes yet")
    panels = []
    for preset, rs in by_size([r for pair in pairs for r in pair]):
        panels.append(F.ScorePanel(_panel_title(preset, rs), [
            _score_series(r, f"{r.stream} s{r.seed}", "tokens_seen", dashed=r.stream == "stationary")
            for r in sorted(rs, key=lambda r: (r.seed or 0, r.stream != "continual"))]))
    blocks: list[Block] = [ctx.figure(
        "fig-stationary.png",
        lambda p: F.plot_score_panels(panels, p, title="Continual vs stationary stream",
                                      xlabel="training tokens seen", x_formatter=si),
        "Probe score over training tokens, continual vs stationary stream",
        "dAUC against each run's first probe over training tokens seen, continual stream (solid) and the "
        "stationary mixture of the same languages (dashed); X: net degradation, the first probe after the "
        "minimum whose smoothed score is above 0 (arXiv:2606.24752 finds plasticity loss on both streams; "
        "for its 27M model net degradation comes at about 320B tokens continual vs 475B stationary).",
    )]
    rows = []
    for c, s in pairs:
        rows.append([c.preset or "-", ti(c.seed), tokens(c.onset.onset_tokens if c.onset else None),
                     tokens(s.onset.onset_tokens if s.onset else None),
                     tokens(c.onset.net_degradation_tokens if c.onset else None),
                     tokens(s.onset.net_degradation_tokens if s.onset else None)])
    blocks.append(Table(["preset", "seed", "onset continual (tokens)", "onset stationary (tokens)",
                         "net degradation continual (tokens)", "net degradation stationary (tokens)"], rows,
                        caption="Onset and net degradation by stream ('-': not reached)"))
    return Section("stationary", title, blocks)


def val_bpb(ctx: Context) -> Section | Skipped | None:
    title = "Validation bits per byte"
    panels = []
    for r in sorted(ctx.inp.runs, key=report_order):
        curves = bpb_curves(r)
        if curves:
            panels.append(F.BpbPanel(f"{r.label} ({r.stream})", curves, r.probe_lang, cycle_boundaries(r)))
    if not panels:
        return Skipped(title, "no run has logged a validation evaluation yet (val/<lang>/bpb in metrics.jsonl)")
    return Section("val-bpb", title, [ctx.figure(
        "fig-val-bpb.png", lambda p: F.plot_val_bpb(panels, p, title="Validation loss per language over training"),
        "Validation bits per byte per language over training tokens, one panel per run",
        "Validation loss in bits per byte (comparable across languages and tokenizers) of every training "
        "language and the held-out probe language (black), measured after each task instance. On the "
        "continual stream each language's curve is a sawtooth: it drops while that language is trained and "
        "rises while the others are. Grey vertical lines: cycle boundaries.",
    )])


def scratch(ctx: Context) -> Section | Skipped | None:
    """The appendix normalisation of arXiv:2606.24752: probes against a fresh initialisation."""
    title = "Against a fresh initialisation"
    runs = [r for r in ctx.inp.runs if np.isfinite(r.column("dauc_scratch")).any()]
    if not runs:
        why = "no run has probes yet" if not any(r.probes for r in ctx.inp.runs) else \
            "the probes have no scratch baseline (probe.scratch_baseline = false)"
        return Skipped(title, why)
    runs.sort(key=report_order)
    series = []
    for r in runs:
        y = r.column("dauc_scratch")
        ok = np.isfinite(y)
        series.append(F.ScoreSeries(f"{r.label} ({r.stream})", r.column("task_index")[ok], y[ok],
                                    dashed=r.stream == "stationary"))
    panel = F.ScorePanel("", series)
    blocks: list[Block] = [ctx.figure(
        "fig-scratch.png",
        lambda p: F.plot_score_panels([panel], p, title="Probe score against a fresh initialisation",
                                      xlabel="task instances trained", ylabel="dAUC vs fresh init (%)",
                                      zero_label="as good as a fresh initialisation",
                                      tasks_per_cycle=runs[0].tasks_per_cycle),
        "Probe score relative to a fresh initialisation over task instances",
        "dAUC_scratch = 100 (AUC / AUC_scratch - 1): each probe against the same probe run from a fresh "
        "initialisation of the same size and seed (the appendix normalisation of arXiv:2606.24752). Below 0 "
        "the trained model still learns the probe language faster than a fresh one; above 0 it learns it "
        "more slowly than a fresh network would.",
    )]
    items = []
    for r in runs:
        y = r.column("dauc_scratch")
        last = y[np.isfinite(y)][-1]
        verdict = "slower than a fresh initialisation" if last > 0 else "still faster than a fresh initialisation"
        items.append(f"{r.label} ({r.stream}): last probe {last:+.3g}% ({verdict})")
    blocks.append(Bullets(items))
    return Section("scratch", title, blocks)


def runs_table(ctx: Context) -> Section | Skipped | None:
    inp = ctx.inp
    with_method = any(r.method for r in inp.runs)
    rows = []
    for r in inp.runs:
        c = r.config
        rows.append([r.name, r.rel, r.preset or "-", params(r.params), r.stream or "-",
                     *([r.method or "-"] if with_method else []), ti(r.seed),
                     str(len(c.stream.languages)) if c else "-", tokens(c.stream.tokens_per_task) if c else "-",
                     str(c.stream.cycles) if c else "-", num(r.peak_lr), str(len(r.probes)),
                     (r.status or "-") + ("" if r.exists else " (no run directory yet)"),
                     "-" if r.wall_time_s is None else f"{float(r.wall_time_s):,.1f}"])
    blocks: list[Block] = [Table(
        ["run", "directory", "preset", "non-embedding params", "stream", *(["method"] if with_method else []),
         "seed", "languages", "tokens per task",
         "cycles", "peak LR", "probes", "status", "wall time (s)"], rows, caption="Runs and their configuration")]
    stages = (inp.study or {}).get("stages") or {}
    if stages:
        blocks.append(Table(["stage", "status", "seconds"],
                            [[str(k), str(v.get("status", "-")), num(v.get("seconds"))] for k, v in stages.items()],
                            caption="Study stages (study.json)"))
    return Section("runs", "Runs", blocks)


def problems(ctx: Context) -> Section | Skipped | None:
    if not ctx.inp.problems:
        return None
    return Section("problems", "Input problems", [
        Paragraph("These files could not be used; the sections above are drawn without them."),
        Bullets(list(ctx.inp.problems)),
    ])


SECTIONS: list[Callable[[Context], Section | Skipped | None]] = [
    probe_scores, onsets, comparison, scaling, stationary, val_bpb, scratch, diagnostics, runs_table, problems,
]
"""Body sections in page order (the summary comes first and is written last)."""


def build_sections(ctx: Context) -> tuple[list[Section], list[Skipped]]:
    shown, skipped = [], []
    for fn in SECTIONS:
        s = fn(ctx)
        if isinstance(s, Section):
            shown.append(s)
        elif isinstance(s, Skipped):
            skipped.append(s)
    return [summary(ctx, skipped), *shown], skipped
