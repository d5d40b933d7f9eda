"""The report's figures: one function per figure, each writing a PNG atomically.

Every function takes plain numbers or a fit record (no run directories), draws with matplotlib's
object API on an Agg canvas (no pyplot, no global backend state) and writes the file atomically
(``runlog.atomic_write_bytes``, ``runlog.atomic_path``). `plasticlm fit --figure` draws with
``plot_onset_fit`` too. Callers decide whether a figure has enough data; the functions only assume
at least one panel / point as documented.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from plasticlm.runlog import atomic_path, atomic_write_bytes
from plasticlm.scaling import ScalingFit
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
        rows = math.ceil(len(seen) / min(fits, len(seen)))
        fig.set_figheight(fig.get_figheight() + rows * 0.16)  # room for the legend: the panels keep their height
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
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: si(v)))
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
    _legend_below(fig, axes)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


_Y_MARGIN = 100.0
"""How far (as a factor) the onset-fit figure's y-axis may reach beyond the data and the fitted law."""


def clipped_y_limits(centre: np.ndarray, spread: np.ndarray, margin: float = _Y_MARGIN
                     ) -> tuple[float, float] | None:
    """Log-axis y-limits for the onset figure: the range of ``spread`` (band and interval ends)
    clipped to ``margin`` times beyond the range of ``centre`` (data and fitted law); None when
    nothing needs clipping. A spread end at or below 0 or at +inf is clipped (log axis)."""
    c = centre[np.isfinite(centre) & (centre > 0)]
    if c.size == 0:
        return None
    y_lo, y_hi = c.min() / margin, c.max() * margin
    w = spread[~np.isnan(spread)]
    low, high = (w.min(), w.max()) if w.size else (c.min(), c.max())
    if low >= y_lo and high <= y_hi:
        return None
    return float(max(min(low, c.min()), y_lo)), float(min(max(high, c.max()), y_hi))


def plot_onset_fit(fit: ScalingFit, path: str | Path, title: str | None = None) -> Path:
    """Onset vs non-embedding parameters on log-log axes (Figure 3 of arXiv:2606.24752), written
    atomically to ``path`` in the format of its suffix (png, pdf, svg).

    Draws the fit's points (one marker per run), its power law with the 95% confidence band of the
    mean, and its extrapolated onsets with their 95% prediction intervals as error bars, all as
    ``fit`` holds them (a study's fit.json read back with ``ScalingFit.from_json``: nothing is
    refitted). When the band or an interval spans more than ``_Y_MARGIN`` times beyond the data and
    the law (few points, far extrapolation), the y-axis is clipped there and the figure says so.
    """
    law, extrapolations = fit.fits["power"], fit.extrapolations
    p, t_obs = fit.params, fit.onsets
    xs = np.concatenate([p, [e.params for e in extrapolations]])
    grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 200)
    lo, hi = law.interval(grid, 0.95, prediction=False)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.fill_between(grid, lo, hi, color="C0", alpha=0.2, lw=0, label="95% confidence band")
    label = f"{law.law}: a = {law.a:.3g}, b = {law.b:.3f}"
    if law.r2 is not None:
        label += f", R$^2$ = {law.r2:.2f}"
    ax.plot(grid, law.predict(grid), color="C0", lw=1.5, label=label)
    ax.plot(p, t_obs, "o", color="C1", ms=5, label="onsets (runs)")
    if extrapolations:
        ex = np.array([e.params for e in extrapolations])
        ey = np.array([e.onset for e in extrapolations])
        err = np.array([[e.onset - e.pi95[0] for e in extrapolations], [e.pi95[1] - e.onset for e in extrapolations]])
        ax.errorbar(ex, ey, yerr=err, fmt="s", color="C3", capsize=3, label="extrapolated (95% PI)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    pis = np.array([x for e in extrapolations for x in e.pi95], dtype=np.float64)
    limits = clipped_y_limits(np.concatenate([t_obs, law.predict(grid)]), np.concatenate([lo, hi, pis]))
    if limits is not None:  # keep the data readable when the band or an interval spans many decades
        ax.set_ylim(*limits)
        ax.text(0.99, 0.01, f"y-axis clipped at {_Y_MARGIN:g}x beyond the data and the fitted law",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.4")
    ax.set_xlabel("non-embedding parameters P")
    ax.set_ylabel("onset T (task instances)")
    ax.set_title(title or "Onset of plasticity loss vs model size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=150, format=target.suffix.lstrip(".") or "png")
    return target


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
