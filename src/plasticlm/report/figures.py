"""The report's figures: one function per figure, each writing a PNG atomically.

Every function takes plain numbers (no run directories), draws with matplotlib's object API on an
Agg canvas (no pyplot, no global backend state, nothing imported at module import time) and writes
the PNG atomically (``runlog.atomic_write_bytes``; the onset-vs-size figure is
``scaling.plot_onset_fit``'s). Callers decide whether a figure has enough data; the
functions only assume at least one panel / point as documented.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plasticlm.runlog import atomic_write_bytes
from plasticlm.units import si

DPI = 110
PANEL_W, PANEL_H = 4.6, 3.2
MIN_W = 7.5  # inches: room for the legend below a single panel


@dataclass
class ScoreSeries:
    """One probe-score curve: raw points, their window-3 moving average, and the marks on it."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    smooth_x: Sequence[float] = ()
    smooth_y: Sequence[float] = ()
    onset: float | None = None
    onset_ci: tuple[float, float] | None = None
    net: float | None = None
    """x of the net-degradation point (first smoothed score > 0 after the minimum)."""
    dashed: bool = False


@dataclass
class ScorePanel:
    title: str
    series: list[ScoreSeries]


@dataclass
class BpbPanel:
    """Validation bits per byte of one run: ``curves[lang] = (tokens, bpb)``."""

    title: str
    curves: dict[str, tuple[Sequence[float], Sequence[float]]]
    probe_lang: str | None = None
    boundaries: Sequence[float] = ()
    """Token counts of cycle boundaries (drawn as faint vertical lines)."""


# --------------------------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------------------------


def _figure(n_panels: int, ncols: int = 3) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(max(PANEL_W * ncols, MIN_W), PANEL_H * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _colors(n: int) -> list[str]:
    return [f"C{i % 10}" for i in range(n)]


def _legend_below(fig: Any, axes: list[Any]) -> None:
    """One legend for all panels, below them (it never covers data); entries unique by label."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        longest = max(len(label) for label in seen)
        fits = max(1, int(fig.get_figwidth() * 72 / (longest * 5.2 + 40)))  # about 5.2 pt per character at 8 pt
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(fits, len(seen)),
                   fontsize=8, frameon=False)


def _cycles_axis(ax: Any, tasks_per_cycle: int | None) -> None:
    """A secondary top axis in cycles (task instances / tasks per cycle)."""
    if tasks_per_cycle and tasks_per_cycle > 1:
        top = ax.secondary_xaxis("top", functions=(lambda x: x / tasks_per_cycle, lambda c: c * tasks_per_cycle))
        top.set_xlabel("cycles", fontsize=8)
        top.tick_params(labelsize=7)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_score_panels(panels: Sequence[ScorePanel], path: str | Path, *, title: str, xlabel: str,
                      ylabel: str = "probe score dAUC (%)", zero_label: str = "first probe (dAUC = 0)",
                      tasks_per_cycle: int | None = None, x_formatter: Callable[[float], str] | None = None) -> Path:
    """Probe scores (one panel per size): raw points, window-3 moving average, onset and its CI.

    With x = task instances this is Figure 2 of arXiv:2606.24752 (dAUC over training, one curve per
    model size, the onset at the minimum of the window-3 moving average); the same function draws
    the continual-vs-stationary comparison (x = tokens seen, net-degradation points marked) and the
    scratch-baseline comparison (y = dAUC against a fresh initialisation).
    """
    fig, axes = _figure(len(panels))
    color: dict[str, str] = {}  # one color per series label across panels, so one legend serves all
    for panel in panels:
        for s in panel.series:
            color.setdefault(s.label, f"C{len(color) % 10}")
    for ax, panel in zip(axes, panels):
        ax.axhline(0.0, color="0.45", lw=0.8, ls=":", label=zero_label)
        for s in panel.series:
            c, ls = color[s.label], "--" if s.dashed else "-"
            ax.plot(s.x, s.y, ls, marker="o", ms=3.5, lw=0.8, alpha=0.55, color=c, label=f"{s.label}")
            if len(s.smooth_x):
                ax.plot(s.smooth_x, s.smooth_y, ls, lw=2.0, color=c, label=f"{s.label}: window-3 mean")
            if s.onset is not None:
                if s.onset_ci is not None:
                    ax.axvspan(s.onset_ci[0], s.onset_ci[1], color=c, alpha=0.12, lw=0)
                ci = "" if s.onset_ci is None else " (shaded: 95% CI)"
                ax.axvline(s.onset, color=c, lw=1.2, ls="-.", label=f"{s.label}: onset{ci}")
            if s.net is not None and len(s.smooth_x):
                at = int(np.argmin(np.abs(np.asarray(s.smooth_x, dtype=float) - s.net)))
                ax.plot([s.net], [s.smooth_y[at]], marker="X", ms=10, color=c, mec="black", mew=0.8, ls="",
                        label=f"{s.label}: net degradation")
        if panel.title:
            ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        if x_formatter is not None:
            from matplotlib.ticker import FuncFormatter

            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: x_formatter(v)))
        _cycles_axis(ax, tasks_per_cycle)
        ax.grid(True, alpha=0.3)
    _legend_below(fig, axes)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_val_bpb(panels: Sequence[BpbPanel], path: str | Path, *, title: str) -> Path:
    """Validation bits per byte of every language over training tokens, one panel per run.

    On the continual stream each training language's curve is a sawtooth: it falls while its task
    is trained and rises while the others are (arXiv:2606.24752 trains 8 languages in turn). The
    probe language, never trained, is drawn black and thick.
    """
    langs: list[str] = []
    for p in panels:
        langs += [lang for lang in p.curves if lang not in langs and lang != p.probe_lang]
    color = dict(zip(langs, _colors(len(langs))))
    fig, axes = _figure(len(panels))
    for ax, panel in zip(axes, panels):
        for b in panel.boundaries:
            ax.axvline(b, color="0.8", lw=0.8, zorder=0)
        for lang, (x, y) in panel.curves.items():
            if lang == panel.probe_lang:
                ax.plot(x, y, color="black", lw=2.4, marker="s", ms=3, label=f"{lang} (probe language, never trained)",
                        zorder=5)
            else:
                ax.plot(x, y, color=color[lang], lw=1.2, marker="o", ms=2.5, label=lang)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("training tokens seen", fontsize=9)
        ax.set_ylabel("validation loss (bits per byte)", fontsize=9)
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: si(v)))
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
    _legend_below(fig, axes)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_onset_fit(params: Sequence[float], onsets: Sequence[float], extrapolate_to: Sequence[float],
                   path: str | Path, tokens_per_task: float | None = None) -> Path:
    """Onset vs non-embedding parameters, log-log, with the power law and its 95% confidence band and
    the extrapolated onsets with prediction intervals (Figure 3 of arXiv:2606.24752), drawn by
    ``plasticlm.scaling.plot_onset_fit``.

    fit.json holds the fit's statistics but not the OLS residual scale the band needs, so the power
    law is refitted here on the same points (``scaling.fit_form``; identical to fit.json's when the
    points are the fit's) and the extrapolations recomputed from it at ``extrapolate_to``.
    """
    from plasticlm.scaling import extrapolate, fit_form
    from plasticlm.scaling import plot_onset_fit as draw

    p, t_obs = np.asarray(params, dtype=np.float64), np.asarray(onsets, dtype=np.float64)
    power = fit_form(p, t_obs, "power")
    return Path(draw((p, t_obs), power, extrapolate(power, list(extrapolate_to), tokens_per_task), path))


def plot_onset_bounds(found: Sequence[tuple[float, float, tuple[float, float] | None]],
                      later: Sequence[tuple[float, float]], earlier: Sequence[tuple[float, float]],
                      path: str | Path) -> Path:
    """Onset vs non-embedding parameters when a power law cannot be fitted: what the runs do say.

    ``found``: (params, onset, 95% CI or None) of runs with an onset; ``later``: (params, last probe)
    of runs still improving at their last probe (onset later than that: a lower bound, drawn as an
    up-pointing triangle); ``earlier``: (params, first probe) of runs already past their minimum at
    the first probe (onset no later than that: an upper bound, a down-pointing triangle). Log-log
    axes as Figure 3 of arXiv:2606.24752.
    """
    fig, (ax,) = _figure(1, ncols=1)
    if found:
        x = np.array([f[0] for f in found])
        y = np.array([f[1] for f in found])
        lo = np.array([f[1] - (f[2][0] if f[2] else f[1]) for f in found])
        hi = np.array([(f[2][1] if f[2] else f[1]) - f[1] for f in found])
        ax.errorbar(x, y, yerr=[lo, hi], fmt="o", color="C0", capsize=3, label="onset (95% bootstrap CI)")
    if later:
        ax.plot([b[0] for b in later], [b[1] for b in later], "^", color="C1", ms=9,
                label="no onset yet: later than the last probe")
    if earlier:
        ax.plot([b[0] for b in earlier], [b[1] for b in earlier], "v", color="C3", ms=9,
                label="no onset seen: at or before the first probe")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-embedding parameters P", fontsize=9)
    ax.set_ylabel("onset T (task instances)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.tick_params(labelsize=8)
    xs = [f[0] for f in found] + [b[0] for b in later] + [b[0] for b in earlier]
    ys = [f[1] for f in found] + [b[1] for b in later] + [b[1] for b in earlier]
    if xs:
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
        ax.set_ylim(min(ys) / 1.6, max(ys) * 1.6)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: si(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: si(v)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8, loc="best")
    fig.suptitle("Onset vs model size (too few onsets for a scaling-law fit)", fontsize=11)
    return _save(fig, path)


def png_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
