"""Scaling laws of the onset of plasticity loss (arXiv:2606.24752, "Onset and scaling law").

Data: points (P_i, T_i), i = 1..n, with P the non-embedding parameter count of a model
(``model.non_embedding_params``) and T its onset in task instances. Several points may share a P
(seeds). Each form is fitted by ordinary least squares of v on u after a transform:

| form          | law                | u     | v     | a (from the intercept c) |
|---------------|--------------------|-------|-------|--------------------------|
| ``power``       | T = a P^b          | ln P  | ln T  | a = exp(c)               |
| ``linear``      | T = a + b P        | P     | T     | a = c                    |
| ``linear_log``  | T = a + b ln P     | ln P  | T     | a = c                    |
| ``exponential`` | T = a exp(b P)     | P     | ln T  | a = exp(c)               |

OLS in (u, v) space, with ubar, vbar the means and Sxx = sum (u_i - ubar)^2:

    b = sum (u_i - ubar)(v_i - vbar) / Sxx,       c = vbar - b ubar
    s^2 = SSR / (n - 2),  SSR = sum (v_i - c - b u_i)^2        (residual variance, n - 2 dof)
    b_se = sqrt(s^2 / Sxx)                                       (OLS standard error of the slope)
    b_ci95 = b -/+ t_{0.975, n-2} b_se                           (Student t)

For the power law these are the paper's "OLS in log space" statistics. The goodness-of-fit
statistics are computed in T units for every form, with That_i the back-transformed prediction
(a P_i^b for the power law; no retransformation-bias correction, as in the paper):

    r2 = 1 - sum (T_i - That_i)^2 / sum (T_i - Tbar)^2           (linear space, about mean T)
    rmse = sqrt(mean_i (T_i - That_i)^2)                         (denominator n)
    loo_rmse = sqrt(mean_i (T_i - That_{-i})^2)                  (leave-one-out)

where That_{-i} is the prediction at P_i of the same form refitted without point i. When several
points share a P (seeds), "without point i" removes every point of that size, so that a seed of
the same size cannot stand in for the held-out one (with one seed per size, as in the paper,
this is exactly the classical leave-one-out). ``best_by_loo`` is the form with the smallest
loo_rmse.

Bootstrap of the power-law exponent (``b_boot95``, the project's addition): sizes are resampled
with replacement (a cluster bootstrap: a drawn size brings all of its seeds) and the power law is
refitted; draws with fewer than 2 distinct sizes have no slope and are skipped (their number is
reported as ``b_boot_n`` = usable draws). Resampling sizes, not rows, is what makes the interval
meaningful with one seed per size; percentiles are linearly interpolated.

Bootstrap over runs within sizes (``b_runs_boot95``, with several seeds per size): every size
keeps its place and its runs are resampled with replacement (a stratified bootstrap), so the
interval carries the training noise between seeds, which resampling sizes alone cannot see when
each size is one point of a few seeds. Reported only when some size has 2 or more runs.

Left-censored onsets (``onset.find_onset``: the minimum sits at the first smoothed point, "at or
before") are fitted as the paper fitted them, at their value, and marked (``left_censored`` in
``points``); ``fit --exclude-left-censored`` leaves them out.

Intervals at a new size P0 (u0 = its transform), in (u, v) space, back-transformed:

    confidence band of the mean:  c + b u0 -/+ t s sqrt(1/n + (u0 - ubar)^2 / Sxx)
    prediction interval:          c + b u0 -/+ t s sqrt(1 + 1/n + (u0 - ubar)^2 / Sxx)

The extrapolated onset of the power law is a P0^b (the back-transformed centre: the median, not
the mean, of a log-normal error model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import stdtrit  # the Student t quantile scipy.stats.t.ppf calls, without its 1.5 s import

from plasticlm.errors import PlasticError
from plasticlm.files import read_csv_columns

FORMS: tuple[str, ...] = ("power", "linear", "linear_log", "exponential")
# form -> (u is ln P, v is ln T)
_LOGS: dict[str, tuple[bool, bool]] = {
    "power": (True, True),
    "linear": (False, False),
    "linear_log": (True, False),
    "exponential": (False, True),
}
_LAW = {"power": "T = a * P^b", "linear": "T = a + b * P", "linear_log": "T = a + b * ln P",
        "exponential": "T = a * exp(b * P)"}


def check_forms(forms: Sequence[str]) -> list[str]:
    """Validate form names (order kept, duplicates dropped)."""
    out: list[str] = []
    for f in forms:
        if f not in _LOGS:
            raise PlasticError(f"unknown form {f!r}; known forms: {', '.join(FORMS)}")
        if f not in out:
            out.append(f)
    if not out:
        raise PlasticError(f"no form to fit; choose from {', '.join(FORMS)}")
    return out


@dataclass(frozen=True)
class FormFit:
    """One fitted form: coefficients, OLS statistics in (u, v) space, fit statistics in T units."""

    form: str
    a: float
    b: float
    intercept: float
    """c, the OLS intercept in (u, v) space."""
    n: int
    b_se: float
    b_ci95: tuple[float, float]
    r2: float | None
    """None when all onsets are equal (no variance to explain)."""
    rmse: float
    loo_rmse: float
    s: float
    """Residual standard deviation in (u, v) space, sqrt(SSR / (n - 2))."""
    u_mean: float
    sxx: float
    b_boot95: tuple[float, float] | None = None
    b_boot_n: int | None = None
    b_runs_boot95: tuple[float, float] | None = None
    """Percentile interval of b over a bootstrap of runs within sizes (seeds); None with one run per size."""

    @property
    def law(self) -> str:
        return _LAW[self.form]

    def predict(self, params: float | np.ndarray) -> np.ndarray:
        """Predicted onset T at ``params`` (back-transformed)."""
        return _predict(self.form, self.intercept, self.b, np.asarray(params, dtype=np.float64))

    def interval(self, params: float | np.ndarray, level: float = 0.95,
                 prediction: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the prediction interval (or, with ``prediction=False``, the confidence band
        of the mean) at ``params``, computed in (u, v) space and back-transformed (module docstring)."""
        u0 = _u(self.form, np.asarray(params, dtype=np.float64))
        t = stdtrit(self.n - 2, (1 + level) / 2)
        half = t * self.s * np.sqrt(float(prediction) + 1 / self.n + (u0 - self.u_mean) ** 2 / self.sxx)
        v0 = self.intercept + self.b * u0
        back = np.exp if _LOGS[self.form][1] else (lambda v: v)
        return back(v0 - half), back(v0 + half)

    def to_json(self) -> dict:
        d = {
            "law": self.law,
            "a": _f(self.a),
            "b": _f(self.b),
            "b_se": _f(self.b_se),
            "b_ci95": [_f(self.b_ci95[0]), _f(self.b_ci95[1])],
            "r2": _f(self.r2),
            "rmse": _f(self.rmse),
            "loo_rmse": _f(self.loo_rmse),
        }
        if self.form == "power":
            d["b_boot95"] = None if self.b_boot95 is None else [_f(self.b_boot95[0]), _f(self.b_boot95[1])]
            d["b_boot_n"] = self.b_boot_n
            d["b_runs_boot95"] = None if self.b_runs_boot95 is None else [_f(x) for x in self.b_runs_boot95]
        return d

    @classmethod
    def from_json(cls, form: str, doc: dict, params: np.ndarray) -> FormFit:
        """The fit ``to_json`` wrote, on the points it was fitted to (``params``: their P).

        fit.json keeps the statistics, not the OLS internals the bands need; they follow from it
        exactly: the intercept c = ln a (power, exponential) or a, u-bar and Sxx from the points'
        u, and s = b_se sqrt(Sxx) (module docstring). No refit: b, a, the CIs and the errors are read."""
        check_forms([form])
        u = _u(form, np.asarray(params, dtype=np.float64))
        sxx = float(np.sum((u - u.mean()) ** 2))
        a, b_se = _nan(doc["a"]), _nan(doc["b_se"])
        return cls(
            form=form, a=a, b=_nan(doc["b"]), intercept=float(np.log(a)) if _LOGS[form][1] else a, n=int(u.size),
            b_se=b_se, b_ci95=_pair(doc["b_ci95"]), r2=doc["r2"], rmse=_nan(doc["rmse"]),
            loo_rmse=_nan(doc["loo_rmse"]), s=b_se * float(np.sqrt(sxx)), u_mean=float(u.mean()), sxx=sxx,
            b_boot95=_pair(doc.get("b_boot95")), b_boot_n=doc.get("b_boot_n"),
            b_runs_boot95=_pair(doc.get("b_runs_boot95")),
        )


def _nan(x: float | None) -> float:
    """A float read back from JSON: None (written for NaN or an infinity) as NaN."""
    return float("nan") if x is None else float(x)


def _pair(v: Sequence[float | None] | None) -> tuple[float, float] | None:
    return None if v is None else (_nan(v[0]), _nan(v[1]))


def _f(x: float | None) -> float | None:
    """A JSON-safe float: None for None, NaN and infinities."""
    return None if x is None or not np.isfinite(x) else float(x)


def _u(form: str, params: np.ndarray) -> np.ndarray:
    return np.log(params) if _LOGS[form][0] else params


def _predict(form: str, c: float, b: float, params: np.ndarray) -> np.ndarray:
    v = c + b * _u(form, params)
    if _LOGS[form][1]:
        with np.errstate(over="ignore"):
            return np.exp(v)
    return v


def _ols(u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(intercept c, slope b) of v on u, centred for accuracy at u ~ 1e8."""
    um, vm = u.mean(), v.mean()
    du = u - um
    b = float(np.dot(du, v - vm) / np.dot(du, du))
    return float(vm - b * um), b


def _check_points(params: np.ndarray, onsets: np.ndarray, form: str) -> None:
    if params.ndim != 1 or params.shape != onsets.shape:
        raise PlasticError(f"params {params.shape} and onsets {onsets.shape} must be 1-D arrays of equal length")
    if params.size < 3:
        raise PlasticError(f"{form} fit: {params.size} point(s); a fit needs at least 3 (n - 2 degrees of freedom)")
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(onsets))):
        raise PlasticError(f"{form} fit: params and onsets must be finite numbers")
    log_p, log_t = _LOGS[form]
    if log_p and np.any(params <= 0):
        raise PlasticError(f"{form} fit uses ln P: every params value must be > 0, got {params.min():g}")
    if log_t and np.any(onsets <= 0):
        raise PlasticError(f"{form} fit uses ln T: every onset must be > 0, got {onsets.min():g}")
    sizes = np.unique(params)
    if sizes.size == 1:
        raise PlasticError(f"{form} fit: all params are equal ({sizes[0]:g}); a fit needs at least 3 distinct sizes")
    if sizes.size < 3:
        raise PlasticError(
            f"{form} fit: only {sizes.size} distinct sizes ({', '.join(f'{s:g}' for s in sizes)}); a fit "
            "needs at least 3 so that leave-one-size-out refits still have a slope"
        )


def read_onsets_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """(params, onset, skipped line numbers, left_censored) from a CSV with columns ``params,onset``.

    Rows whose onset cell is empty (or null/nan: a run without an onset) are skipped and their
    line numbers returned, so that they are reported rather than silently dropped. An optional
    column ``censored`` marks left-censored onsets with "left" (as onsets.csv writes it); a ``name``
    column (as in a study's onsets.csv), when present, must not repeat a run; other columns are
    ignored.
    """
    cols = read_csv_columns(path, ["params", "onset"], allow_empty=("onset",), unique=("name",), text=("censored",))
    keep = np.isfinite(cols["onset"])
    skipped = [int(x) for x in cols["_line"][~keep]]
    cens = np.asarray([c.lower() == "left" for c in cols["censored"]], dtype=bool)
    return cols["params"][keep], cols["onset"][keep], skipped, cens[keep]


def fit_form(params: Sequence[float] | np.ndarray, onsets: Sequence[float] | np.ndarray, form: str = "power",
             level: float = 0.95) -> FormFit:
    """Fit one form by OLS in its (u, v) space; statistics as defined in the module docstring.

    ``level`` sets the coverage of ``b_ci95`` (0.95 by default; the name keeps the paper's 95%).
    Raises ``PlasticError`` for fewer than 3 points or 3 distinct sizes, and for non-positive
    values where the form takes a logarithm.
    """
    check_forms([form])
    p = np.asarray(params, dtype=np.float64)
    t_obs = np.asarray(onsets, dtype=np.float64)
    _check_points(p, t_obs, form)
    n = p.size
    u = _u(form, p)
    v = np.log(t_obs) if _LOGS[form][1] else t_obs
    c, b = _ols(u, v)
    sxx = float(np.sum((u - u.mean()) ** 2))
    s2 = float(np.sum((v - c - b * u) ** 2)) / (n - 2)
    b_se = float(np.sqrt(s2 / sxx))
    tq = float(stdtrit(n - 2, (1 + level) / 2))
    pred = _predict(form, c, b, p)
    ss_res = float(np.sum((t_obs - pred) ** 2))
    ss_tot = float(np.sum((t_obs - t_obs.mean()) ** 2))
    loo = np.empty(n)
    for size in np.unique(p):  # leave one size (all of its seeds) out
        out = p == size
        ci, bi = _ols(u[~out], v[~out])
        loo[out] = t_obs[out] - _predict(form, ci, bi, p[out])
    return FormFit(
        form=form,
        a=float(np.exp(c)) if _LOGS[form][1] else c,
        b=b,
        intercept=c,
        n=n,
        b_se=b_se,
        b_ci95=(b - tq * b_se, b + tq * b_se),
        r2=None if ss_tot == 0 else 1 - ss_res / ss_tot,
        rmse=float(np.sqrt(ss_res / n)),
        loo_rmse=float(np.sqrt(np.mean(loo**2))),
        s=float(np.sqrt(s2)),
        u_mean=float(u.mean()),
        sxx=sxx,
    )


def bootstrap_exponent(params: Sequence[float] | np.ndarray, onsets: Sequence[float] | np.ndarray,
                       n_boot: int = 2000, seed: int = 0, level: float = 0.95
                       ) -> tuple[tuple[float, float] | None, int, np.ndarray]:
    """Percentile interval of the power-law exponent b over a bootstrap of sizes (module docstring).

    Returns ((low, high) or None, number of usable draws, the exponents of the usable draws).
    Each draw picks k sizes with replacement out of the k distinct sizes; the rows of a size
    drawn m times enter the OLS m times (a weighted fit, vectorised over draws).
    """
    if n_boot < 1:
        raise PlasticError(f"bootstrap draws = {n_boot}: must be >= 1 (or skip the bootstrap)")
    p = np.asarray(params, dtype=np.float64)
    t_obs = np.asarray(onsets, dtype=np.float64)
    _check_points(p, t_obs, "power")
    sizes, which = np.unique(p, return_inverse=True)
    k = sizes.size
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    counts = np.zeros((n_boot, k))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    w = counts[:, which]  # (B, n) weight of each row
    usable = (counts > 0).sum(axis=1) >= 2
    b = _weighted_slopes(np.log(p), np.log(t_obs), w[usable])
    if b.size == 0:
        return None, 0, b
    lo, hi = np.percentile(b, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return (float(lo), float(hi)), int(b.size), b


def _weighted_slopes(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """OLS slopes of v on u for B weight vectors w (B, n) at once (NaN where u has no spread)."""
    wsum = w.sum(axis=1)
    um = (w @ u) / wsum
    vm = (w @ v) / wsum
    du = u[None, :] - um[:, None]
    sxx = np.sum(w * du**2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(w * du * (v[None, :] - vm[:, None]), axis=1) / sxx


def bootstrap_exponent_runs(params: Sequence[float] | np.ndarray, onsets: Sequence[float] | np.ndarray,
                            n_boot: int = 2000, seed: int = 0, level: float = 0.95
                            ) -> tuple[float, float] | None:
    """Percentile interval of the power-law exponent over a bootstrap of runs within sizes.

    Each size keeps its place; its m runs (seeds) are drawn m times with replacement (module
    docstring). None when every size has a single run (nothing to resample)."""
    p = np.asarray(params, dtype=np.float64)
    t_obs = np.asarray(onsets, dtype=np.float64)
    _check_points(p, t_obs, "power")
    sizes, which = np.unique(p, return_inverse=True)
    if np.bincount(which).max() < 2:
        return None
    rng = np.random.default_rng(seed)
    w = np.zeros((n_boot, p.size))
    for k in range(sizes.size):
        rows = np.nonzero(which == k)[0]
        picks = rows[rng.integers(0, rows.size, size=(n_boot, rows.size))]
        np.add.at(w, (np.arange(n_boot)[:, None], picks), 1.0)
    b = _weighted_slopes(np.log(p), np.log(t_obs), w)
    b = b[np.isfinite(b)]
    lo, hi = np.percentile(b, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Extrapolation:
    """The power law's onset at a new size, with its prediction interval, in tasks and tokens."""

    params: float
    onset: float
    pi95: tuple[float, float]
    tokens: float | None = None
    tokens_pi95: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return {
            "params": _f(self.params),
            "onset": _f(self.onset),
            "pi95": [_f(self.pi95[0]), _f(self.pi95[1])],
            "tokens": _f(self.tokens),
            "tokens_pi95": None if self.tokens_pi95 is None else [_f(x) for x in self.tokens_pi95],
        }

    @classmethod
    def from_json(cls, doc: dict) -> Extrapolation:
        tok = doc.get("tokens")
        return cls(_nan(doc["params"]), _nan(doc["onset"]), _pair(doc["pi95"]),
                   None if tok is None else float(tok), _pair(doc.get("tokens_pi95")))


def extrapolate(fit: FormFit, params: Sequence[float], tokens_per_task: float | None = None,
                level: float = 0.95) -> list[Extrapolation]:
    """Onset predicted by ``fit`` (the power law in the paper) at each size, with the prediction
    interval t s sqrt(1 + 1/n + (u0 - ubar)^2 / Sxx) in (u, v) space, back-transformed; in task
    instances and, given ``tokens_per_task``, in tokens (onset * tokens_per_task)."""
    out = []
    for p0 in params:
        if not np.isfinite(p0) or p0 <= 0:
            raise PlasticError(f"extrapolation size {p0!r}: must be a positive number of parameters")
        onset = float(fit.predict(p0))
        lo, hi = (float(x) for x in fit.interval(p0, level, prediction=True))
        tok = None if tokens_per_task is None else onset * tokens_per_task
        tok_pi = None if tokens_per_task is None else (lo * tokens_per_task, hi * tokens_per_task)
        out.append(Extrapolation(float(p0), onset, (lo, hi), tok, tok_pi))
    return out


@dataclass(frozen=True)
class ScalingFit:
    """All requested forms fitted to the same points, the LOO winner and the power-law extrapolations."""

    params: np.ndarray
    onsets: np.ndarray
    fits: dict[str, FormFit]
    best_by_loo: str
    extrapolations: list[Extrapolation] = field(default_factory=list)
    tokens_per_task: float | None = None
    left_censored: np.ndarray | None = None
    """Per point: True for a left-censored onset (at or before its value); None = none marked."""

    def to_json(self) -> dict:
        cens = np.zeros(self.params.size, bool) if self.left_censored is None else self.left_censored
        return {
            "n": int(self.params.size),
            "n_sizes": int(np.unique(self.params).size),
            "n_left_censored": int(cens.sum()),
            "points": [{"params": _f(p), "onset": _f(t), "left_censored": bool(c)}
                       for p, t, c in zip(self.params, self.onsets, cens)],
            "fits": {name: f.to_json() for name, f in self.fits.items()},
            "best_by_loo": self.best_by_loo,
            "tokens_per_task": self.tokens_per_task,
            "extrapolations": [e.to_json() for e in self.extrapolations],
        }

    @classmethod
    def from_json(cls, doc: dict) -> ScalingFit:
        """The fit ``to_json`` wrote (fit.json): ``from_json(f.to_json()).to_json() == f.to_json()``, and
        the bands and intervals of each form are those of the fit that was written (``FormFit.from_json``)."""
        points = doc["points"]
        params = np.array([p["params"] for p in points], dtype=np.float64)
        if len(points) != doc["n"]:
            raise ValueError(f"n = {doc['n']} but {len(points)} points")
        fits = {name: FormFit.from_json(name, f, params) for name, f in doc["fits"].items()}
        if doc["best_by_loo"] not in fits:
            raise ValueError(f"best_by_loo {doc['best_by_loo']!r} is not a fitted form")
        return cls(params, np.array([p["onset"] for p in points], dtype=np.float64), fits, doc["best_by_loo"],
                   [Extrapolation.from_json(e) for e in doc.get("extrapolations") or []], doc.get("tokens_per_task"),
                   np.array([bool(p["left_censored"]) for p in points], dtype=bool))


def fit_scaling(
    params: Sequence[float] | np.ndarray,
    onsets: Sequence[float] | np.ndarray,
    forms: Sequence[str] = FORMS,
    extrapolate_to: Sequence[float] = (),
    tokens_per_task: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    left_censored: Sequence[bool] | np.ndarray | None = None,
) -> ScalingFit:
    """Fit every form in ``forms``, bootstrap the power-law exponent over sizes and over runs within
    sizes (``n_boot`` = 0 skips both), pick the form with the lowest LOO RMSE, and extrapolate the
    power law to ``extrapolate_to``. ``left_censored`` marks points (module docstring)."""
    names = check_forms(forms)
    p = np.asarray(params, dtype=np.float64)
    t_obs = np.asarray(onsets, dtype=np.float64)
    cens = None if left_censored is None else np.asarray(left_censored, dtype=bool)
    if cens is not None and cens.shape != p.shape:
        raise PlasticError(f"left_censored has {cens.size} flags for {p.size} points")
    fits = {name: fit_form(p, t_obs, name) for name in names}
    if "power" in fits and n_boot > 0:
        ci, used, _ = bootstrap_exponent(p, t_obs, n_boot, seed)
        runs_ci = bootstrap_exponent_runs(p, t_obs, n_boot, seed)
        fits["power"] = dataclasses.replace(fits["power"], b_boot95=ci, b_boot_n=used, b_runs_boot95=runs_ci)
    best = min(names, key=lambda name: (not np.isfinite(fits[name].loo_rmse), fits[name].loo_rmse))
    extra: list[Extrapolation] = []
    if extrapolate_to:
        if "power" not in fits:
            raise PlasticError("extrapolation uses the power law: include 'power' in the forms")
        extra = extrapolate(fits["power"], extrapolate_to, tokens_per_task)
    return ScalingFit(p, t_obs, fits, best, extra, tokens_per_task, cens)
