"""What the report says: number formats, the sentences about onsets, sizes and the fit, and the summary.

Every sentence is a function of records already read (``load``) and selected (``select``); nothing
here computes a statistic.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from plasticlm.records import SizeRecord
from plasticlm.report.context import Context, Skipped
from plasticlm.report.html import Bullets, Section
from plasticlm.report.load import ReportInput, RunData
from plasticlm.report.select import by_size, fit_points
from plasticlm.units import num, si

# --------------------------------------------------------------------------------------------
# Formats
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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _finite(pair: Sequence[float] | None) -> Sequence[float] | None:
    """An interval read from fit.json, or None when absent or not finite (written as null)."""
    return pair if pair is not None and all(x is not None and np.isfinite(x) for x in pair) else None


# --------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------


def onset_sentence(run: RunData) -> str:
    o = run.onset
    if not run.probes and o is None:
        return f"{run.label} ({run.stream}): no probes yet, so no onset"
    if o is None:
        return f"{run.label} ({run.stream}): onset unknown (see Input problems)"
    if o.onset_task_index is None:
        if o.code == "still_improving" and o.lower_bound_task_index is not None:
            text = (f"{run.label} ({run.stream}): no onset yet: the smoothed score is still falling at the last "
                    f"probe, so the onset is at or after {ti(o.lower_bound_task_index)} task instances")
        else:
            text = f"{run.label} ({run.stream}): no onset: {run.onset_reason or 'none was found'}"
        if o.seq_ci95 is not None:  # the point estimate has none, but some resampled curves do
            text += (f"; some bootstrap resamples of the validation sequences do show one, 95% of them within "
                     f"{interval(o.seq_ci95)} task instances")
        return text
    at = "at or before" if o.censored == "left" else "after"
    text = f"{run.label} ({run.stream}): onset {at} {ti(o.onset_task_index)} task instances"
    tpc = run.tasks_per_cycle
    cycles = o.onset_task_index / tpc if tpc else None
    extra = [f"{cycles:.3g} cycle{'' if cycles == 1 else 's'}"] if cycles is not None else []
    if o.onset_tokens is not None:
        extra.append(f"{tokens(o.onset_tokens)} tokens")
    text += f" ({', '.join(extra)})" if extra else ""
    if o.censored == "left":
        text += " (left-censored: the smoothed minimum is at the first smoothed probe; earlier probes would locate it)"
    if o.probe_se_dauc is not None:
        text += f"; probe noise {o.probe_se_dauc:.2g} dAUC points (standard error from probe replicates)"
    if o.seq_ci95 is None:
        return text
    lo, hi = o.seq_ci95
    text += f"; 95% CI over validation sequences {interval(o.seq_ci95)} task instances"
    tlo, thi = run.tokens_at(lo), run.tokens_at(hi)
    if tlo is not None and thi is not None:
        text += f" ({interval((tlo, thi), tokens)} tokens)"
    text += " (evaluation noise only: it does not include training noise, which seeds measure)"
    if hi - lo > 0.5 * o.onset_task_index:
        text += "; a wide interval, the onset is poorly determined"
    if o.seq_ci_fraction_null:
        text += f"; {100 * o.seq_ci_fraction_null:.0f}% of the bootstrap draws find no onset at all"
    return text


def seed_onsets(z: SizeRecord) -> str:
    return ", ".join("none" if t is None else ti(t) for t in z.seed_onsets or ())


def size_sentence(z: SizeRecord) -> str:
    """One size's onset from its seeds, said as certain only when the seeds agree."""
    head = f"{z.preset} ({z.stream}, {plural(z.n_seeds, 'seed')})"
    seeds = seed_onsets(z)
    if z.onset_task_index is None:
        text = f"{head}: the seed-averaged score has no onset"
        if z.code == "still_improving" and z.lower_bound_task_index is not None:
            text += f" yet (still falling at the last probe: at or after {ti(z.lower_bound_task_index)} task instances)"
        return text + (f"; the seeds' own onsets: {seeds}" if z.n_seeds > 1 else "")
    at = "at or before " if z.censored == "left" else ""
    text = f"{head}: onset of the seed-averaged score {at}{ti(z.onset_task_index)} task instances"
    if z.n_seeds < 2:
        return text + "; one seed, so training noise is not measured and the onset may move on a rerun"
    text += f", 95% CI over runs {interval(z.runs_ci95)}; the seeds' own onsets: {seeds}"
    if z.seeds_agree:
        return text + " (the seeds agree)"
    return text + " (the seeds disagree: the onset of this size is uncertain by at least that spread)"


def fit_sentences(inp: ReportInput) -> list[str]:
    """What fit.json says, with its limits (the intervals that reach 0 or 1, few points, far extrapolation)."""
    P, _ = fit_points(inp)
    if inp.fit is None:
        return [f"No scaling-law fit: {inp.fit_note}. Onsets exist for {plural(len(P), 'run')} at "
                f"{plural(len(set(P)), 'size')}, so this study does not show whether the onset grows with "
                "model size."]
    fit = inp.fit
    pw = fit.fits["power"]
    b, ci, boot, runs_ci = pw.b, _finite(pw.b_ci95), _finite(pw.b_boot95), _finite(pw.b_runs_boot95)
    n, n_sizes = int(fit.params.size), int(np.unique(fit.params).size)
    text = (f"Power law T = a P^b fitted to {n} onsets at {n_sizes} sizes: b = {b:.3g} "
            f"(OLS 95% CI {interval(ci, lambda v: num(v, '.3g'))}")
    if boot:
        text += f"; bootstrap over sizes {interval(boot, lambda v: num(v, '.3g'))}"
    if runs_ci:
        text += f"; bootstrap over runs within sizes (seed spread) {interval(runs_ci, lambda v: num(v, '.3g'))}"
    text += f"), a = {num(pw.a)}"
    if pw.r2 is not None:
        text += f", R^2 = {pw.r2:.2f} in linear space"
    out = [text + "."]
    n_cens = 0 if fit.left_censored is None else int(fit.left_censored.sum())
    if n_cens:
        verb = "is" if n_cens == 1 else "are"
        out.append(f"{n_cens} of these onsets {verb} left-censored (at or before {'its' if n_cens == 1 else 'their'} "
                   f"value) and {verb} fitted at {'its' if n_cens == 1 else 'their'} value, as arXiv:2606.24752 did.")
    intervals = {"OLS": ci, "bootstrap over sizes": boot, "bootstrap over runs": runs_ci}
    with_zero = [k for k, v in intervals.items() if v and v[0] <= 0 <= v[1]]
    hi = ci[1] if ci else None
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
    if n - 2 <= 2:
        out.append(f"Only {n} onsets: the fit has {plural(n - 2, 'residual degree')} of freedom, so b and its "
                   "intervals rest on very little data; one more size could change them a lot.")
    best = fit.best_by_loo
    out.append(f"By leave-one-out RMSE the best form is {best}"
               + (" (the power law)." if best == "power" else "; the power law is not the best predictor of "
                  "held-out sizes here."))
    ex = [e for e in fit.extrapolations if np.isfinite(e.onset)]
    if ex:
        parts = []
        for e in ex:
            s = f"{si(e.params)} params: {num(e.onset)} task instances (95% PI {interval(e.pi95, num)})"
            if e.tokens is not None:
                s += f" = {tokens(e.tokens)} tokens"
            parts.append(s)
        far = max(e.params for e in ex) / max(P) if P else None
        tail = (f"; the largest lies {far:.0f}x beyond the largest fitted size, where the interval assumes the "
                "law still holds") if far and far > 2 else ""
        out.append("Extrapolated onsets of the power law: " + "; ".join(parts) + tail + ".")
    return out


def stationary_sentences(inp: ReportInput) -> list[str]:
    cont = {(r.preset, r.seed): r for r in inp.runs if r.stream == "continual"}
    out = []
    for s in inp.runs:
        c = cont.get((s.preset, s.seed))
        if s.stream != "stationary" or c is None or not (c.probes and s.probes):
            continue

        def net(r: RunData) -> str:
            return "not reached" if r.onset is None or r.onset.net_degradation_tokens is None else \
                f"at {tokens(r.onset.net_degradation_tokens)} tokens"

        out.append(f"{s.label}: net degradation (smoothed dAUC above 0 after its minimum) {net(c)} on the "
                   f"continual stream, {net(s)} on the stationary stream.")
    return out


MAX_RUN_LINES = 12
"""Above this many runs the summary gives onsets per size and stream, not per run."""


def onset_lines(runs: list[RunData]) -> list[str]:
    """Onset sentences: one per run, or one per (size, stream) for a large study."""
    ordered = sorted(runs, key=lambda r: (r.stream == "stationary", r.params or 0, r.seed or 0))
    if len(ordered) <= MAX_RUN_LINES:
        return [onset_sentence(r) + "." for r in ordered]
    groups: dict[tuple[str, str | None], list[RunData]] = defaultdict(list)
    for r in ordered:
        groups[(r.preset or r.name, r.stream)].append(r)
    lines = []
    for (preset, stream), rs in groups.items():
        found = [r.onset.onset_task_index for r in rs if r.onset is not None and r.onset.onset_task_index is not None]
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
        groups = by_size(runs)
        sizes = ", ".join(f"{preset} ({params(rs[0].params)})" for preset, rs in groups)
        streams: dict[str, int] = defaultdict(int)
        for r in runs:
            streams[r.stream or "unknown"] += 1
        done = sum(r.status == "done" for r in runs)
        seeds = sorted({r.seed for r in runs if r.seed is not None})
        items.append(f"{plural(len(runs), 'run')} ({done} done) at {plural(len(groups), 'size')} "
                     f"(non-embedding parameters): {sizes}; streams: "
                     + ", ".join(f"{k} x{v}" for k, v in streams.items())
                     + f"; seeds: {', '.join(map(str, seeds)) or '-'}.")
    items += onset_lines(runs)
    sizes_ = [z for z in inp.sizes if z.n_seeds > 0]
    if any(z.n_seeds > 1 for z in sizes_):
        items += [size_sentence(z) + "." for z in sorted(sizes_, key=lambda z: (z.stream != "continual",
                                                                                 z.non_embedding_params))]
    elif inp.kind == "study" and sizes_:
        items.append("One seed per size: training noise is not measured, so any onset here may move on another "
                     "seed or another machine (set sweep.seeds to several seeds to measure it).")
    if inp.kind == "study":
        items += fit_sentences(inp)
        items += stationary_sentences(inp)
    for s in skipped:
        items.append(f"Not shown: {s.title} ({s.reason}).")
    if inp.problems:
        items.append(f"{len(inp.problems)} input problem(s): see Input problems at the end.")
    return Section("summary", "Summary", [Bullets(items)])
