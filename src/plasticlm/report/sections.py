"""The report's sections, each a function of what was read (``ReportInput``).

A section function returns a ``Section``, a ``Skipped`` (the section applies but its inputs are
missing: the summary says so) or None (it does not apply to this kind of directory). Sections are
data-driven: adding one (e.g. "Diagnostics" from ``diag/*`` metrics, or "Mitigations" from the
runs' mitigation configs) means writing one function and adding it to ``SECTIONS``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plasticlm.report import figures as F
from plasticlm.report.diagnostics_section import diagnostics
from plasticlm.report.html import Block, Bullets, Image, Note, Paragraph, Section, Table
from plasticlm.report.load import WINDOW, ReportInput, RunData, SizeOnset
from plasticlm.units import num, si

FORM_ORDER = ("power", "linear", "linear_log", "exponential")


@dataclass
class Skipped:
    """A section that applies but cannot be shown, and why."""

    title: str
    reason: str


@dataclass
class Context:
    inp: ReportInput
    out: Path
    """The report directory (DIR/report)."""
    figures: list[Path] = field(default_factory=list)

    def figure(self, name: str, draw: Callable[[Path], object], alt: str, caption: str) -> Block:
        """Draw one figure into the report directory; a failure becomes a note on the page."""
        path = self.out / name
        try:
            draw(path)
        except Exception as e:  # one broken figure must not cost the rest of the report
            return Note(f"Figure {name} could not be drawn: {type(e).__name__}: {self.inp.rel(str(e))}")
        self.figures.append(path)
        w, h = F.png_size(path)
        return Image(name, alt, caption, w, h)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def ti(x: Any) -> str:
    """A task index (probe point): whole numbers without a decimal point."""
    if x is None or not math.isfinite(float(x)):
        return "-"
    return f"{int(x):,}" if float(x).is_integer() else f"{float(x):.3g}"


def interval(ci: Sequence[Any] | None, f: Callable[[Any], str] = ti) -> str:
    return "-" if not ci or ci[0] is None or ci[1] is None else f"[{f(ci[0])}, {f(ci[1])}]"


def tokens(x: Any) -> str:
    return "-" if x is None else si(float(x))


def params(x: Any) -> str:
    return "-" if x is None else f"{int(x):,}"


def _by_size(runs: list[RunData]) -> list[tuple[str, list[RunData]]]:
    """Runs grouped by preset, in increasing size."""
    groups: dict[str, list[RunData]] = defaultdict(list)
    for r in runs:
        groups[r.preset or r.name].append(r)
    return sorted(groups.items(), key=lambda kv: (kv[1][0].params or 0, kv[0]))


def _panel_title(preset: str, runs: list[RunData]) -> str:
    p = runs[0].params
    return preset if p is None else f"{preset}: {p:,} non-embedding params"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def continual_runs(inp: ReportInput) -> list[RunData]:
    """Runs on a switching stream (continual or permuted): the ones whose onset the scaling law uses."""
    return [r for r in inp.runs if r.stream != "stationary"]


def _score_series(run: RunData, label: str, x_key: str, dashed: bool = False) -> F.ScoreSeries:
    sx, sy = run.smoothed("dauc", x_key)
    o = run.onset
    onset = ci = net = None
    if o is not None:
        if x_key == "task_index":
            onset, ci = o.task_index, o.ci
        else:
            onset = o.tokens
            if o.ci is not None:
                lo, hi = run.tokens_at(o.ci[0]), run.tokens_at(o.ci[1])
                ci = (lo, hi) if lo is not None and hi is not None else None
            net = o.net_tokens
    return F.ScoreSeries(label, run.column(x_key), run.column("dauc"), sx, sy, onset, ci, net, dashed)


def _onset_sentence(run: RunData) -> str:
    o = run.onset
    if not run.probes and o is None:
        return f"{run.label} ({run.stream}): no probes yet, so no onset"
    if o is None:
        return f"{run.label} ({run.stream}): onset unknown (see Input problems)"
    if o.task_index is None:
        if o.code == "still_improving" and o.lower_bound is not None:
            text = (f"{run.label} ({run.stream}): no onset yet: the smoothed score is still falling at the last "
                    f"probe, so the onset is at or after {ti(o.lower_bound)} task instances")
        else:
            text = f"{run.label} ({run.stream}): no onset: {o.reason or 'none was found'}"
        if o.ci is not None:  # the point estimate has none, but some resampled curves do
            text += (f"; some bootstrap resamples of the validation sequences do show one, 95% of them within "
                     f"{interval(o.ci)} task instances")
        return text
    at = "at or before" if o.censored == "left" else "after"
    text = f"{run.label} ({run.stream}): onset {at} {ti(o.task_index)} task instances"
    tpc = run.tasks_per_cycle
    cycles = o.task_index / tpc if tpc else None
    extra = [f"{cycles:.3g} cycle{'' if cycles == 1 else 's'}"] if cycles is not None else []
    if o.tokens is not None:
        extra.append(f"{tokens(o.tokens)} tokens")
    text += f" ({', '.join(extra)})" if extra else ""
    if o.censored == "left":
        text += " (left-censored: the smoothed minimum is at the first smoothed probe; earlier probes would locate it)"
    if o.probe_se is not None:
        text += f"; probe noise {o.probe_se:.2g} dAUC points (standard error from probe replicates)"
    if o.ci is None:
        return text
    lo, hi = o.ci
    text += f"; 95% CI over validation sequences {interval(o.ci)} task instances"
    tlo, thi = run.tokens_at(lo), run.tokens_at(hi)
    if tlo is not None and thi is not None:
        text += f" ({interval((tlo, thi), tokens)} tokens)"
    text += " (evaluation noise only: it does not include training noise, which seeds measure)"
    if hi - lo > 0.5 * o.task_index:
        text += "; a wide interval, the onset is poorly determined"
    if o.fraction_null:
        text += f"; {100 * o.fraction_null:.0f}% of the bootstrap draws find no onset at all"
    return text


def _size_sentence(z: SizeOnset) -> str:
    """One size's onset from its seeds, said as certain only when the seeds agree."""
    head = f"{z.preset} ({z.stream}, {_plural(z.n_seeds, 'seed')})"
    seeds = ", ".join("none" if t is None else ti(t) for t in z.seed_onsets)
    if z.task_index is None:
        text = f"{head}: the seed-averaged score has no onset"
        if z.code == "still_improving" and z.lower_bound is not None:
            text += f" yet (still falling at the last probe: at or after {ti(z.lower_bound)} task instances)"
        return text + (f"; the seeds' own onsets: {seeds}" if z.n_seeds > 1 else "")
    at = "at or before " if z.censored == "left" else ""
    text = f"{head}: onset of the seed-averaged score {at}{ti(z.task_index)} task instances"
    if z.n_seeds < 2:
        return text + "; one seed, so training noise is not measured and the onset may move on a rerun"
    text += f", 95% CI over runs {interval(z.runs_ci)}; the seeds' own onsets: {seeds}"
    if z.seeds_agree:
        return text + " (the seeds agree)"
    return text + " (the seeds disagree: the onset of this size is uncertain by at least that spread)"


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def probe_scores(ctx: Context) -> Section | Skipped | None:
    """Figure 2 of arXiv:2606.24752: dAUC over task instances, one panel per size, onset marked."""
    title = "Probe score over training"
    runs = continual_runs(ctx.inp) if ctx.inp.kind == "study" else ctx.inp.runs
    probed = [r for r in runs if r.probes] or [r for r in ctx.inp.runs if r.probes]
    if not probed:
        return Skipped(title, "no run has probes yet (probes.jsonl is missing or empty); run `plasticlm probe RUN_DIR`")
    panels = [F.ScorePanel(_panel_title(preset, rs),
                           [_score_series(r, f"seed {r.seed}" + ("" if r.stream == "continual" else f" ({r.stream})"),
                                          "task_index") for r in rs])
              for preset, rs in _by_size(probed)]
    tpc = probed[0].tasks_per_cycle
    blocks: list[Block] = [ctx.figure(
        "fig-probe-scores.png",
        lambda p: F.plot_score_panels(panels, p, title="Plasticity probe score over training",
                                      xlabel="task instances trained", tasks_per_cycle=tpc),
        "Probe score dAUC over task instances for each model size",
        "Probe score dAUC_k = 100 (AUC_k / AUC_1 - 1): the area under the probe's validation-loss curve "
        "against the same run's first probe (positive: the model learns the held-out probe language more "
        "slowly than at its first probe). Points: probes; thick line: centred window-3 moving average; "
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
    rows = []
    for r in sorted(runs, key=lambda r: (r.stream != "continual", r.params or 0, r.seed or 0)):
        o = r.onset
        ci_tok = None
        if o is not None and o.ci is not None:
            ci_tok = (r.tokens_at(o.ci[0]), r.tokens_at(o.ci[1]))
        note = "" if o is None or o.code in (None, "onset") else o.reason or ""
        rows.append([r.name, r.preset or "-", r.stream or "-", params(r.params), ti(r.seed), str(len(r.probes)),
                     ti(o.task_index) if o else "-", interval(o.ci) if o else "-",
                     tokens(o.tokens) if o else "-", interval(ci_tok, tokens),
                     tokens(o.net_tokens) if o else "-", note])
    cols = ["run", "preset", "stream", "non-embedding params", "seed", "probes", "onset (task instances)",
            "95% CI over val. sequences", "onset (tokens)", "95% CI (tokens)", "net degradation (tokens)", "note"]
    src = " and ".join(sorted({r.onset.source for r in runs if r.onset is not None})) or "no onset computed"
    blocks: list[Block] = [
        Table(cols, rows, caption=f"Onset of plasticity loss per run ({src})"),
        Paragraph(f"Onset: the probe point (task instances trained) at the earliest minimum of the window-{WINDOW} "
                  "moving average of dAUC (arXiv:2606.24752). A minimum at the first smoothed point is an onset "
                  "at or before it (left-censored, as the paper's smallest models); one at the last smoothed point "
                  "is no onset yet (a lower bound). 95% CI over validation sequences: bootstrap over the probe "
                  "language's validation sequences; it measures evaluation noise only, not training noise. Net "
                  "degradation: the first probe after the minimum whose smoothed dAUC is above 0."),
    ]
    sizes = [z for z in ctx.inp.sizes if z.n_seeds > 0]
    if sizes:
        blocks.append(Table(
            ["preset", "stream", "non-embedding params", "seeds", "onset of the mean curve (task instances)",
             "95% CI over runs", "seeds' onsets", "seeds agree"],
            [[z.preset, z.stream, params(z.params), str(z.n_seeds),
              ("<= " if z.censored == "left" else "") + ti(z.task_index) if z.task_index is not None
              else (f">= {ti(z.lower_bound)}" if z.lower_bound is not None else "none"),
              interval(z.runs_ci), ", ".join("none" if t is None else ti(t) for t in z.seed_onsets),
              "-" if z.seeds_agree is None or z.n_seeds < 2 else ("yes" if z.seeds_agree else "no")]
             for z in sorted(sizes, key=lambda z: (z.stream != "continual", z.params or 0))],
            caption="Onset per size from its seeds (sizes.csv): the onset of the seed-averaged dAUC curve and a "
                    "bootstrap over runs, which includes training noise"))
    return Section("onsets", title, blocks)


def _fit_points(inp: ReportInput) -> tuple[list[float], list[float]]:
    """(non-embedding params, onset) of the scaling law: fit.json's points when it records them,
    else every continual run with an onset (left-censored ones included, as the paper fitted them)."""
    recorded = (inp.fit or {}).get("points")
    if recorded:
        return [float(p["params"]) for p in recorded], [float(p["onset"]) for p in recorded]
    pts = [(float(r.params), float(r.onset.task_index)) for r in continual_runs(inp)
           if r.params and r.onset is not None and r.onset.task_index is not None]
    return [p for p, _ in pts], [t for _, t in pts]


def _tokens_per_task(inp: ReportInput) -> float | None:
    tpt = {r.config.stream.tokens_per_task for r in inp.runs if r.config is not None}
    if inp.fit and inp.fit.get("tokens_per_task"):
        return float(inp.fit["tokens_per_task"])
    return float(tpt.pop()) if len(tpt) == 1 else None


def _onset_bounds_figure(ctx: Context) -> list[Block]:
    """What the continual runs say about onset vs size without a fit: onsets, and bounds for runs
    whose smoothed score was still falling at the last probe (later) or lowest at the first (earlier)."""
    found, later, earlier = [], [], []
    for r in continual_runs(ctx.inp):
        if not r.params or r.onset is None or not r.probes:
            continue
        probed = sorted(p["task_index"] for p in r.probes)
        if r.onset.censored == "left":
            earlier.append((float(r.params), float(r.onset.task_index)))
        elif r.onset.task_index is not None:
            found.append((float(r.params), float(r.onset.task_index), r.onset.ci))
        elif r.onset.code == "still_improving":
            later.append((float(r.params), float(r.onset.lower_bound or probed[-1])))
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
    P, T = _fit_points(inp)
    n_sizes = len(set(P))
    have = f"Onsets exist for {_plural(len(P), 'run')} at {_plural(n_sizes, 'size')}."
    if inp.fit is None:
        return Section("scaling", title, [Note(f"No scaling-law fit: {inp.fit_note}. {have}"),
                                          *_onset_bounds_figure(ctx)])
    fit = inp.fit
    power = fit["fits"]["power"]
    blocks: list[Block] = []
    if n_sizes >= 3:
        sizes = [e["params"] for e in fit.get("extrapolations") or [] if e.get("params")]
        blocks.append(ctx.figure(
            "fig-onset-fit.png", lambda p: F.plot_onset_fit(P, T, sizes, p, _tokens_per_task(inp)),
            "Onset versus non-embedding parameters with the fitted power law",
            "Onset T (task instances) against non-embedding parameters P, log-log: the runs' onsets, the power "
            "law T = a P^b fitted by OLS on (ln P, ln T) with its 95% confidence band, and extrapolated onsets "
            "with 95% prediction intervals. As Figure 3 of arXiv:2606.24752.",
        ))
        b_now = float(np.polyfit(np.log(P), np.log(T), 1)[0])
        if fit.get("n") != len(P) or not math.isclose(b_now, float(power["b"]), rel_tol=1e-6, abs_tol=1e-9):
            blocks.append(Note(
                f"fit.json was fitted to {fit.get('n')} onsets (b = {float(power['b']):.3g}), but the runs now hold "
                f"{len(P)} onsets (b = {b_now:.3g} refitted): the figure shows the refit, the tables and the summary "
                "fit.json. Run `plasticlm sweep` again to bring fit.json up to date."))
    else:
        blocks.append(Note(f"The runs hold too few onsets to draw a power law (3 sizes needed). {have}"))
        blocks += _onset_bounds_figure(ctx)
    best = fit.get("best_by_loo")
    rows, best_rows = [], set()
    forms = [f for f in FORM_ORDER if f in fit["fits"]] + [f for f in fit["fits"] if f not in FORM_ORDER]
    for i, name in enumerate(forms):
        f = fit["fits"][name]
        if name == best:
            best_rows.add(i)
        rows.append([name, str(f.get("law", "")), num(f.get("a")), num(f.get("b"), ".4g"), num(f.get("b_se"), ".3g"),
                     interval(f.get("b_ci95"), lambda v: num(v, ".4g")),
                     interval(f.get("b_boot95"), lambda v: num(v, ".4g")) if name == "power" else "-",
                     num(f.get("r2"), ".3f"), num(f.get("rmse")), num(f.get("loo_rmse")),
                     "best" if name == best else ""])
    blocks.append(Table(
        ["form", "law", "a", "b", "b_se", "b 95% CI (OLS)", "b 95% CI (bootstrap over sizes)", "R^2",
         "RMSE (task instances)", "LOO RMSE (task instances)", "by LOO RMSE"], rows,
        caption=f"Scaling-law fits (fit.json; n = {fit.get('n')} onsets)", best_rows=best_rows))
    blocks.append(Paragraph(
        "b_se and the OLS CI: in the fitted (transformed) space with n - 2 degrees of freedom; R^2, RMSE and the "
        "leave-one-out RMSE (refit without each size, predict it) in task instances, as in arXiv:2606.24752. "
        "The highlighted form predicts held-out sizes best."))
    ex = fit.get("extrapolations") or []
    if ex:
        blocks.append(Table(
            ["non-embedding params", "onset (task instances)", "95% PI (task instances)", "onset (tokens)",
             "95% PI (tokens)"],
            [[si(e.get("params")), num(e.get("onset")), interval(e.get("pi95"), num), tokens(e.get("tokens")),
              interval(e.get("tokens_pi95"), tokens)] for e in ex],
            caption="Power-law extrapolation of the onset (95% prediction intervals)"))
    return Section("scaling", title, blocks)


def stationary(ctx: Context) -> Section | Skipped | None:
    """Continual vs stationary stream, x = tokens (the paper's 27M: net-negative at ~320B vs ~475B)."""
    inp = ctx.inp
    if inp.kind != "study":
        return None
    title = "Continual vs stationary"
    stat = [r for r in inp.runs if r.stream == "stationary" and r.probes]
    if not [r for r in inp.runs if r.stream == "stationary"]:
        return Skipped(title, "no stationary run in this study (sweep.stationary = false)")
    cont = {(r.preset, r.seed): r for r in inp.runs if r.stream == "continual" and r.probes}
    pairs = [(cont[(s.preset, s.seed)], s) for s in stat if (s.preset, s.seed) in cont]
    if not pairs:
        return Skipped(title, "no continual/stationary pair of the same size and seed has probes yet")
    panels = []
    for preset, rs in _by_size([r for pair in pairs for r in pair]):
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
        rows.append([c.preset or "-", ti(c.seed), tokens(c.onset.tokens if c.onset else None),
                     tokens(s.onset.tokens if s.onset else None),
                     tokens(c.onset.net_tokens if c.onset else None), tokens(s.onset.net_tokens if s.onset else None)])
    blocks.append(Table(["preset", "seed", "onset continual (tokens)", "onset stationary (tokens)",
                         "net degradation continual (tokens)", "net degradation stationary (tokens)"], rows,
                        caption="Onset and net degradation by stream ('-': not reached)"))
    return Section("stationary", title, blocks)


def _bpb_curves(run: RunData) -> dict[str, tuple[list[float], list[float]]]:
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for row in run.metrics:
        for key, value in row.items():
            if key.startswith("val/") and key.endswith("/bpb") and value is not None:
                x, y = curves.setdefault(key[4:-4], ([], []))
                x.append(row["tokens"])
                y.append(value)
    return curves


def val_bpb(ctx: Context) -> Section | Skipped | None:
    title = "Validation bits per byte"
    panels = []
    for r in sorted(ctx.inp.runs, key=lambda r: (r.stream != "continual", r.params or 0, r.seed or 0)):
        curves = _bpb_curves(r)
        if not curves:
            continue
        order = list(r.config.stream.languages) if r.config else []
        curves = dict(sorted(curves.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order),
                                                             kv[0])))
        tpc = r.tasks_per_cycle
        bounds = sorted({row["tokens"] for row in r.metrics if tpc and row.get("task_index", -1) >= 0
                         and (row["task_index"] + 1) % tpc == 0 and any(k.startswith("val/") for k in row)})
        panels.append(F.BpbPanel(f"{r.label} ({r.stream})", curves, r.probe_lang, bounds))
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
    runs.sort(key=lambda r: (r.stream != "continual", r.params or 0, r.seed or 0))
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
    rows = []
    for r in inp.runs:
        c = r.config
        rows.append([r.name, r.rel, r.preset or "-", params(r.params), r.stream or "-", ti(r.seed),
                     str(len(c.stream.languages)) if c else "-", tokens(c.stream.tokens_per_task) if c else "-",
                     str(c.stream.cycles) if c else "-", num(r.peak_lr), str(len(r.probes)),
                     (r.status or "-") + ("" if r.exists else " (no run directory yet)"),
                     "-" if r.wall_time_s is None else f"{float(r.wall_time_s):,.1f}"])
    blocks: list[Block] = [Table(
        ["run", "directory", "preset", "non-embedding params", "stream", "seed", "languages", "tokens per task",
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


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _fit_sentences(inp: ReportInput) -> list[str]:
    P, _ = _fit_points(inp)
    if inp.fit is None:
        return [f"No scaling-law fit: {inp.fit_note}. Onsets exist for {_plural(len(P), 'run')} at "
                f"{_plural(len(set(P)), 'size')}, so this study does not show whether the onset grows with "
                "model size."]
    fit = inp.fit
    pw = fit["fits"]["power"]
    b, ci, boot = float(pw["b"]), pw.get("b_ci95"), pw.get("b_boot95")
    n, n_sizes = fit.get("n"), fit.get("n_sizes") or len(set(P))
    text = (f"Power law T = a P^b fitted to {n} onsets at {n_sizes} sizes: b = {b:.3g} "
            f"(OLS 95% CI {interval(ci, lambda v: num(v, '.3g'))}")
    runs_ci = pw.get("b_runs_boot95")
    if boot and boot[0] is not None:
        text += f"; bootstrap over sizes {interval(boot, lambda v: num(v, '.3g'))}"
    if runs_ci and runs_ci[0] is not None:
        text += f"; bootstrap over runs within sizes (seed spread) {interval(runs_ci, lambda v: num(v, '.3g'))}"
    text += f"), a = {num(pw.get('a'))}"
    if pw.get("r2") is not None:
        text += f", R^2 = {pw['r2']:.2f} in linear space"
    out = [text + "."]
    if fit.get("n_left_censored"):
        out.append(f"{fit['n_left_censored']} of these onsets are left-censored (at or before their value) and are "
                   "fitted at their value, as arXiv:2606.24752 did.")
    intervals = {"OLS": ci, "bootstrap over sizes": boot, "bootstrap over runs": runs_ci}
    with_zero = [k for k, v in intervals.items() if v and v[0] is not None and v[1] is not None and v[0] <= 0 <= v[1]]
    lo, hi = (ci if ci and ci[0] is not None and ci[1] is not None else (None, None))
    double = f"doubling the non-embedding parameters multiplies the onset by 2^b = {2 ** b:.2f}"
    if with_zero:
        out.append(f"A 95% interval of b includes 0 ({', '.join(with_zero)}): these data do not show whether the "
                   f"onset grows with model size (point estimate: {double}).")
    elif b < 1 and hi is not None and hi < 1:
        out.append(f"b < 1 with the whole CI below 1: the onset grows sublinearly, slower than model size; {double}, "
                   "not 2 (arXiv:2606.24752 also finds a sublinear exponent).")
    elif b < 1:
        out.append(f"b < 1: the onset grows sublinearly, slower than model size ({double}), but the CI "
                   "reaches 1, so linear growth is not excluded by these data.")
    else:
        out.append(f"b >= 1: here the onset grows at least linearly with size ({double}); arXiv:2606.24752 "
                   "finds b < 1.")
    if isinstance(n, int) and n - 2 <= 2:
        out.append(f"Only {n} onsets: the fit has {_plural(n - 2, 'residual degree')} of freedom, so b and its "
                   "intervals rest on very little data; one more size could change them a lot.")
    best = fit.get("best_by_loo")
    if best:
        out.append(f"By leave-one-out RMSE the best form is {best}"
                   + (" (the power law)." if best == "power" else "; the power law is not the best predictor of "
                      "held-out sizes here."))
    ex = [e for e in fit.get("extrapolations") or [] if e.get("onset") is not None]
    if ex:
        parts = []
        for e in ex:
            s = f"{si(e['params'])} params: {num(e['onset'])} task instances (95% PI {interval(e.get('pi95'), num)})"
            if e.get("tokens") is not None:
                s += f" = {tokens(e['tokens'])} tokens"
            parts.append(s)
        far = max(e["params"] for e in ex) / max(P) if P else None
        tail = (f"; the largest lies {far:.0f}x beyond the largest fitted size, where the interval assumes the "
                "law still holds") if far and far > 2 else ""
        out.append("Extrapolated onsets of the power law: " + "; ".join(parts) + tail + ".")
    return out


def _stationary_sentences(inp: ReportInput) -> list[str]:
    cont = {(r.preset, r.seed): r for r in inp.runs if r.stream == "continual"}
    out = []
    for s in inp.runs:
        c = cont.get((s.preset, s.seed))
        if s.stream != "stationary" or c is None or not (c.probes and s.probes):
            continue

        def net(r: RunData) -> str:
            return "not reached" if r.onset is None or r.onset.net_tokens is None else \
                f"at {tokens(r.onset.net_tokens)} tokens"

        out.append(f"{s.label}: net degradation (smoothed dAUC above 0 after its minimum) {net(c)} on the "
                   f"continual stream, {net(s)} on the stationary stream.")
    return out


MAX_RUN_LINES = 12
"""Above this many runs the summary gives onsets per size and stream, not per run."""


def _onset_lines(runs: list[RunData]) -> list[str]:
    """Onset sentences: one per run, or one per (size, stream) for a large study."""
    ordered = sorted(runs, key=lambda r: (r.stream == "stationary", r.params or 0, r.seed or 0))
    if len(ordered) <= MAX_RUN_LINES:
        return [_onset_sentence(r) + "." for r in ordered]
    groups: dict[tuple[str, str | None], list[RunData]] = defaultdict(list)
    for r in ordered:
        groups[(r.preset or r.name, r.stream)].append(r)
    lines = []
    for (preset, stream), rs in groups.items():
        found = [r.onset.task_index for r in rs if r.onset is not None and r.onset.task_index is not None]
        parts = [f"onset after {', '.join(ti(t) for t in found)} task instances"] if found else []
        if len(found) < len(rs):
            parts.append(f"no onset in {len(rs) - len(found)} of them")
        lines.append(f"{preset} ({stream}, {len(rs)} runs): {'; '.join(parts)}.")
    lines.append("Each run's onset, its confidence interval, or why it has none: the Onsets table.")
    return lines


def summary(ctx: Context, skipped: list[Skipped]) -> Section:
    inp = ctx.inp
    runs = inp.runs
    items = []
    if inp.kind == "run":
        r = runs[0]
        c = r.config
        shape = (f", {len(c.stream.languages)} languages x {c.stream.cycles} cycles, "
                 f"{tokens(c.stream.tokens_per_task)} tokens per task instance") if c else ""
        wall = "" if r.wall_time_s is None else f", wall time {float(r.wall_time_s):,.1f} s"
        items.append(f"Run {r.name}: preset {r.preset or '-'} ({params(r.params)} non-embedding parameters), "
                     f"{r.stream} stream{shape}; status {r.status or '-'}{wall}; {len(r.probes)} probes.")
    else:
        sizes = ", ".join(f"{preset} ({params(rs[0].params)})" for preset, rs in _by_size(runs))
        streams = defaultdict(int)
        for r in runs:
            streams[r.stream or "unknown"] += 1
        done = sum(r.status == "done" for r in runs)
        seeds = sorted({r.seed for r in runs if r.seed is not None})
        n_sizes = len(_by_size(runs))
        items.append(f"{_plural(len(runs), 'run')} ({done} done) at {_plural(n_sizes, 'size')} "
                     f"(non-embedding parameters): {sizes}; streams: "
                     + ", ".join(f"{k} x{v}" for k, v in streams.items())
                     + f"; seeds: {', '.join(map(str, seeds)) or '-'}.")
    items += _onset_lines(runs)
    sizes = [z for z in inp.sizes if z.n_seeds > 0]
    if any(z.n_seeds > 1 for z in sizes):
        items += [_size_sentence(z) + "." for z in sorted(sizes, key=lambda z: (z.stream != "continual",
                                                                                 z.params or 0))]
    elif inp.kind == "study" and sizes:
        items.append("One seed per size: training noise is not measured, so any onset here may move on another "
                     "seed or another machine (set sweep.seeds to several seeds to measure it).")
    if inp.kind == "study":
        items += _fit_sentences(inp)
        items += _stationary_sentences(inp)
    for s in skipped:
        items.append(f"Not shown: {s.title} ({s.reason}).")
    if inp.problems:
        items.append(f"{len(inp.problems)} input problem(s): see Input problems at the end.")
    return Section("summary", "Summary", [Bullets(items)])


SECTIONS: list[Callable[[Context], Section | Skipped | None]] = [
    probe_scores, onsets, scaling, stationary, val_bpb, scratch, diagnostics, runs_table, problems,
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
