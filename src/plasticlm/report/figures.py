"""The report's figures: one function per figure, each writing a PNG atomically.

Every function takes plain numbers (no run directories), draws with matplotlib's object API on an
Agg canvas (no pyplot, no global backend state, nothing imported at module import time) and writes
the PNG with ``runlog.atomic_write_bytes``. Callers decide whether a figure has enough data; the
functions only assume at least one panel / point as documented.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plasticlm.runlog import atomic_write_bytes

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


@dataclass
class OnsetFit:
    """What the onset-vs-size figure draws: points, the power law T = a P^b and its statistics."""

    params: Sequence[float]
    onsets: Sequence[float]
    labels: Sequence[str]
    a: float
    b: float
    b_se: float | None
    extrapolations: list[dict[str, Any]] = field(default_factory=list)
    """``fit.json`` extrapolations: {"params", "onset", "pi95"}."""
    band: bool = True
    """Draw the 95% confidence band (only valid when the fit was made on exactly these points)."""
    tokens_per_task: float | None = None
    r2: float | None = None


# --------------------------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------------------------


def _figure(n_panels: int, ncols: int = 3, sharey: bool = False) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(max(PANEL_W * ncols, MIN_W), PANEL_H * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel().tolist()
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


def _plain_log(axis: Any) -> None:
    """Plain numbers (0.1, 4, 10) instead of 4x10^0 on a log axis; minor ticks labelled when few decades."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            return f"{x:g}"

    axis.set_major_formatter(Plain(labelOnlyBase=False))
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _cycles_axis(ax: Any, tasks_per_cycle: int | None) -> None:
    """A secondary top axis in cycles (task instances / tasks per cycle)."""
    if tasks_per_cycle and tasks_per_cycle > 1:
        top = ax.secondary_xaxis("top", functions=(lambda x: x / tasks_per_cycle, lambda c: c * tasks_per_cycle))
        top.set_xlabel("cycles", fontsize=8)
        top.tick_params(labelsize=7)


def si(x: float) -> str:
    """1234567 -> '1.23M' (tokens and parameter counts)."""
    if x is None or not math.isfinite(x):
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


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


def power_band(params: np.ndarray, onsets: np.ndarray, a: float, b: float, b_se: float,
               grid: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
    """Confidence band of the mean of T = a P^b fitted by OLS on (ln P, ln T) at ``grid``.

    The OLS residual scale follows from the slope's standard error, s = b_se * sqrt(Sxx), so the band
    c + b u0 -/+ t_{n-2} s sqrt(1/n + (u0 - ubar)^2 / Sxx) (u = ln P, c = ln a) needs only the points
    and fit.json's a, b, b_se. None when it is undefined (n < 3 or all points at one size).
    """
    from scipy import stats

    u = np.log(np.asarray(params, dtype=np.float64))
    n = u.size
    sxx = float(np.sum((u - u.mean()) ** 2))
    if n < 3 or sxx <= 0 or b_se is None or not math.isfinite(b_se) or a <= 0:
        return None
    s = b_se * math.sqrt(sxx)
    t = stats.t.ppf((1 + level) / 2, n - 2)
    u0 = np.log(grid)
    half = t * s * np.sqrt(1 / n + (u0 - u.mean()) ** 2 / sxx)
    v0 = math.log(a) + b * u0
    return np.exp(v0 - half), np.exp(v0 + half)


def plot_onset_vs_params(fit: OnsetFit, path: str | Path) -> Path:
    """Onset vs non-embedding parameters on log-log axes with the fitted power law (Figure 3 of
    arXiv:2606.24752): onsets of the runs, T = a P^b with its 95% confidence band, and the
    extrapolated onsets with their 95% prediction intervals."""
    p = np.asarray(fit.params, dtype=np.float64)
    t_obs = np.asarray(fit.onsets, dtype=np.float64)
    ex = fit.extrapolations
    xs = np.concatenate([p, [e["params"] for e in ex]])
    grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 200)
    fig, (ax,) = _figure(1)
    fig.set_size_inches(6.6, 4.6)
    band = power_band(p, t_obs, fit.a, fit.b, fit.b_se, grid) if fit.band else None
    if band is not None:
        ax.fill_between(grid, band[0], band[1], color="C0", alpha=0.2, lw=0, label="95% confidence band")
    label = f"T = a P^b: a = {fit.a:.3g}, b = {fit.b:.3f}"
    if fit.r2 is not None:
        label += f", R$^2$ = {fit.r2:.2f}"
    ax.plot(grid, fit.a * grid ** fit.b, color="C0", lw=1.5, label=label)
    ax.plot(p, t_obs, "o", color="C1", ms=6, label="onsets (runs)")
    for xi, yi, text in zip(p, t_obs, fit.labels):
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(5, -10), fontsize=7)
    if ex:
        ey = np.array([e["onset"] for e in ex], dtype=float)
        lo = np.array([(e.get("pi95") or [y, y])[0] for e, y in zip(ex, ey)], dtype=float)
        hi = np.array([(e.get("pi95") or [y, y])[1] for e, y in zip(ex, ey)], dtype=float)
        ax.errorbar([e["params"] for e in ex], ey, yerr=[ey - lo, hi - ey], fmt="s", color="C3", capsize=3,
                    label="extrapolated (95% prediction interval)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log(ax.yaxis)
    ax.set_xlabel("non-embedding parameters P")
    ax.set_ylabel("onset T (task instances)")
    if fit.tokens_per_task:
        tpt = fit.tokens_per_task
        right = ax.secondary_yaxis("right", functions=(lambda t: t * tpt, lambda tok: tok / tpt))
        right.set_ylabel("onset (training tokens)")
        from matplotlib.ticker import FuncFormatter

        right.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: si(v)))
        right.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax.set_title("Onset of plasticity loss vs model size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left")
    return _save(fig, path)


def onset_fit_figure(fit: OnsetFit, path: str | Path) -> Path:
    """The onset-vs-size figure: ``plasticlm.scaling.plot_onset_fit`` where that module exists,
    else ``plot_onset_vs_params``.

    ``scaling.plot_onset_fit`` takes the fitted ``FormFit`` (its band needs the OLS residual scale),
    which fit.json does not hold: it is refitted from the same points with ``scaling.fit_form``, so
    it is used only when ``fit.band`` says the points are the fit's.
    """
    try:
        from plasticlm import scaling
    except ImportError:
        scaling = None
    if scaling is not None and hasattr(scaling, "plot_onset_fit") and fit.band:
        p, t_obs = np.asarray(fit.params, float), np.asarray(fit.onsets, float)
        extra = [scaling.Extrapolation(float(e["params"]), float(e["onset"]), tuple(e["pi95"]), e.get("tokens"))
                 for e in fit.extrapolations if e.get("pi95")]
        return Path(scaling.plot_onset_fit((p, t_obs), scaling.fit_form(p, t_obs, "power"), extra, path))
    return plot_onset_vs_params(fit, path)


def png_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
