"""Probe scores and the onset of plasticity loss (arXiv:2606.24752, "Onset and scaling law").

Everything here is a pure function of arrays; the probe code computes scores with ``auc`` /
``dauc`` / ``score_curve`` and the onset with ``find_onset`` and ``onset_ci_from_curves``.

Scores
------
A probe trains a copy of the model on the held-out language and measures the validation loss
L(t) at probe steps t_0 < t_1 < ... < t_m (t_0 = 0). Its score is

    AUC = (1 / (t_m - t_0)) * sum_i (t_{i+1} - t_i) * (L(t_i) + L(t_{i+1})) / 2,

the trapezoidal area under the loss-vs-step curve divided by the probe's length in steps, i.e. the
mean validation loss over the probe (nats when L is in nats). Dividing by the length does not
change any ratio below, and makes AUCs of probes of different lengths comparable as losses.
Lower = the model learns the new language faster. The normalised score of probe k is

    dAUC_k = 100 * (AUC_k / AUC_ref - 1)

with AUC_ref the same model's first probe (the paper's main figures) or a probe from a fresh
initialisation (the paper's appendix; the "scratch baseline"). Positive = worse than the reference.

Onset (the paper's rule, made exact)
------------------------------------
Given scores y_0..y_{n-1} at increasing task indices x_0..x_{n-1} (a task index counts task
instances trained before the probe), and an odd window w (paper: 3), h = (w - 1) / 2:

1. smoothed s_j = mean(y_{j-h} .. y_{j+h}), computed only where the whole window fits, i.e. for
   j = h .. n-1-h (m = n - w + 1 smoothed points); the first and last h probe points are never
   the onset.
2. j* = the earliest index of the smallest s_j (the earliest argmin). Values within 1e-12
   (relative to the largest |s|, at least absolute 1e-12) of the minimum count as ties, so that
   equal scores summed in another order still tie.
3. onset = x at j*, with its censoring (arXiv:2606.24752, "Onset"):
   - j* interior: an onset, uncensored (``code = "onset"``).
   - j* = 0, the first smoothed point: an onset, **left-censored** ("at or before"; ``code =
     "left_censored"``): the minimum may lie before the probes began. The paper counts these: its
     smallest models' onsets sit at task instance 6, the first point where a window-3 mean exists
     under its schedule (probes after tasks 2, 6, 8, 10, 14, ...).
   - j* = m - 1, the last smoothed point (and m > 1): **no onset**, right-censored (``code =
     "still_improving"``): the smoothed score is still falling at the last probe, so the onset, if
     any, is at or after ``lower_bound`` = x at j*.
   - m < 2 (fewer than w + 1 points): no onset (``code = "too_few_points"``): a single smoothed
     point cannot tell a minimum from a start.
   Ties are resolved first, so a plateau gives its first point, and a minimum tied between the
   first smoothed point and a later one is a left-censored onset.

Every result carries a machine-readable ``code`` (``REASON_CODES``) next to its sentence
(``reason``); later stages (sweep, report) read the code, never the prose.

Net degradation: the first probe point after j* (the earliest smoothed minimum, interior or not)
whose smoothed score is > 0, i.e. where the model has become worse at learning than at the
reference. Defined only when the smoothed minimum is <= 0 (the curve was at or better than the
reference); otherwise, or when the score never turns positive after the minimum, ``None``. The
paper compares this point between the stationary and the continual stream (27M model: about 475B
vs 320B tokens).

Uncertainty (the project's addition; the paper reports none)
------------------------------------------------------------
``onset_ci_from_curves`` resamples the fixed validation sequences of the probe language with
replacement (the same resample for every probe point and for the reference), recomputes every
AUC, the dAUC curve and its onset, and reports percentile bounds of the onset over the draws that
have one, with the fraction of draws without an onset. AUC is linear in the per-sequence losses,
so a resampled AUC is the resample-weighted mean of per-sequence AUCs; this makes 1,000 draws over
1,280 sequences and a hundred probe points cost milliseconds. That interval is **evaluation noise
only** (``ci95_kind = "validation_sequences"``): it cannot see training noise, which between two
seeds or two machines can move an onset by several cycles.

Seeds: ``seed_onset`` takes S runs of one size probed at the same points. The size's onset is the
onset of the seed-averaged score curve; its interval is a bootstrap over runs (S runs drawn with
replacement, averaged, onset found; ``ci95_runs``); the seeds' own onsets are reported beside it,
with whether they agree. This is the uncertainty the study reports for a size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plasticlm.errors import PlasticError
from plasticlm.files import read_csv_columns

METHOD = "moving_average_min"
"""Name of the onset rule above (in JSON output and run records)."""

REASON_CODES: dict[str, str] = {
    "onset": "an interior minimum of the smoothed score: an onset",
    "left_censored": "the smoothed minimum is at the first smoothed point: an onset at or before it",
    "still_improving": "the smoothed minimum is at the last smoothed point: no onset yet (a lower bound)",
    "too_few_points": "fewer than window + 1 probe points: no onset can be located",
    "no_probes": "the run has no probes yet",
    "not_finished": "the run did not finish: no onset from a partial curve",
    "seeds_disagree": "seeds put the onset at different probe points",
}
"""Machine-readable outcome codes of an onset (``Onset.code``, onsets.csv ``code``): code -> meaning.
The last three are written by the study (sweep) for runs and sizes; ``find_onset`` returns the first four."""

CENSORING = {"onset": None, "left_censored": "left", "still_improving": "right"}
"""The censoring of each code that has one: "left" = at or before, "right" = not before (a lower bound)."""

_TIE_RTOL = 1e-12


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def _check_steps(steps: np.ndarray) -> np.ndarray:
    s = np.asarray(steps, dtype=np.float64)
    if s.ndim != 1 or s.size < 2:
        raise PlasticError(f"probe eval steps must be a 1-D array of at least 2 steps, got shape {s.shape}")
    if not np.all(np.diff(s) > 0):
        raise PlasticError(f"probe eval steps must be strictly increasing, got {s.tolist()}")
    return s


def auc(steps: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """Mean validation loss over a probe: trapezoidal area under loss vs step / (steps[-1] - steps[0]).

    ``losses`` has shape (n_eval,) or (n_eval, ...) with axis 0 aligned with ``steps``; the result
    has the trailing shape (a float for a 1-D curve, one AUC per sequence for (n_eval, n_seq)).
    Formula in the module docstring (arXiv:2606.24752 scores a probe by this area).
    """
    s = _check_steps(np.asarray(steps))
    y = np.asarray(losses, dtype=np.float64)
    if y.ndim == 0 or y.shape[0] != s.size:
        raise PlasticError(f"probe losses have shape {y.shape}; axis 0 must match the {s.size} eval steps")
    dt = np.diff(s).reshape((-1,) + (1,) * (y.ndim - 1))
    area = np.sum(dt * (y[1:] + y[:-1]) / 2.0, axis=0)
    out = area / (s[-1] - s[0])
    return float(out) if out.ndim == 0 else out


def dauc(auc_k: float | np.ndarray, auc_ref: float | np.ndarray) -> float | np.ndarray:
    """Normalised probe score dAUC = 100 * (AUC_k / AUC_ref - 1) (arXiv:2606.24752). Positive = worse."""
    ref = np.asarray(auc_ref, dtype=np.float64)
    if np.any(ref <= 0) or not np.all(np.isfinite(ref)):
        raise PlasticError(f"reference AUC must be positive and finite, got {auc_ref}")
    out = 100.0 * (np.asarray(auc_k, dtype=np.float64) / ref - 1.0)
    return float(out) if out.ndim == 0 else out


def _stack_curves(curves: Sequence[np.ndarray], n_steps: int) -> np.ndarray:
    """(n_points, n_eval, n_seq) from a list of per-probe (n_eval, n_seq) arrays, with shape checks."""
    if len(curves) == 0:
        raise PlasticError("no probe curves given")
    arrs = [np.asarray(c, dtype=np.float64) for c in curves]
    shape = arrs[0].shape
    for k, a in enumerate(arrs):
        if a.ndim != 2 or a.shape != shape or a.shape[0] != n_steps:
            raise PlasticError(
                f"probe curve {k} has shape {a.shape}; every curve must be (n_eval_steps={n_steps}, "
                f"n_sequences) with the same number of sequences (first curve: {shape})"
            )
        if not np.all(np.isfinite(a)):
            raise PlasticError(f"probe curve {k} has non-finite losses")
    return np.stack(arrs)


def _sequence_aucs(
    curves: Sequence[np.ndarray], eval_steps: np.ndarray, reference: int | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence AUCs: (n_points, n_seq) for the probes and (n_seq,) for the reference."""
    steps = _check_steps(eval_steps)
    stacked = _stack_curves(curves, steps.size)
    per_seq = np.stack([auc(steps, c) for c in stacked])  # (n_points, n_seq)
    if isinstance(reference, int | np.integer):
        if not -len(curves) <= int(reference) < len(curves):
            raise PlasticError(f"reference = {reference}: not a probe index (0..{len(curves) - 1})")
        ref = per_seq[int(reference)]
    else:
        ref_curve = _stack_curves([reference], steps.size)[0]
        if ref_curve.shape != stacked.shape[1:]:
            raise PlasticError(
                f"reference curve has shape {ref_curve.shape}; it must match the probes' {stacked.shape[1:]} "
                "(the same validation sequences at the same eval steps)"
            )
        ref = auc(steps, ref_curve)
    return per_seq, np.asarray(ref)


def score_curve(
    curves: Sequence[np.ndarray], eval_steps: np.ndarray, reference: int | np.ndarray = 0
) -> np.ndarray:
    """dAUC of each probe point from per-sequence losses.

    ``curves[k]`` has shape (n_eval_steps, n_sequences): the validation loss of every sequence at
    every eval step of probe k. The AUC of probe k is ``auc(eval_steps, curves[k].mean(axis=1))``.
    ``reference`` is the index of the reference probe in ``curves`` (default 0, the first probe)
    or an (n_eval_steps, n_sequences) array: the scratch-baseline probe on the same sequences.
    """
    per_seq, ref = _sequence_aucs(curves, eval_steps, reference)
    return 100.0 * (per_seq.mean(axis=1) / ref.mean() - 1.0)


# --------------------------------------------------------------------------------------------
# Onset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Onset:
    """The onset of one score curve (see the module docstring for the rule)."""

    onset_task_index: float | None
    """The onset, also when left-censored; None for no onset."""
    net_degradation_task_index: float | None
    reason: str | None
    """A sentence: why there is no onset, or why it is censored; None for an uncensored onset."""
    window: int
    task_index: np.ndarray
    """The probe points, sorted."""
    score: np.ndarray
    """The scores at those points."""
    smoothed_task_index: np.ndarray
    """x of the smoothed points: task_index[h : n - h]."""
    smoothed: np.ndarray
    code: str = "onset"
    """The outcome, one of ``REASON_CODES``: onset, left_censored, still_improving, too_few_points."""
    method: str = METHOD

    @property
    def censored(self) -> str | None:
        """"left" (onset at or before), "right" (no onset yet; see ``lower_bound``) or None."""
        return CENSORING.get(self.code)

    @property
    def lower_bound(self) -> float | None:
        """For a right-censored curve: the onset is at or after this task index (its last smoothed point)."""
        return float(self.smoothed_task_index[-1]) if self.code == "still_improving" else None

    def to_json(self) -> dict:
        return {
            "onset_task_index": _num(self.onset_task_index),
            "code": self.code,
            "censored": self.censored,
            "lower_bound_task_index": _num(self.lower_bound),
            "method": self.method,
            "window": self.window,
            "smoothed": [
                {"task_index": _num(x), "score": float(s)} for x, s in zip(self.smoothed_task_index, self.smoothed)
            ],
            "net_degradation_task_index": _num(self.net_degradation_task_index),
            "reason": self.reason,
        }


def _num(x: float | None) -> int | float | None:
    """A task index for JSON: an int when integral, else a float; None stays None."""
    if x is None:
        return None
    x = float(x)
    return int(x) if x.is_integer() else x


def _check_window(window: int) -> int:
    if isinstance(window, bool) or int(window) != window or window < 1 or window % 2 == 0:
        raise PlasticError(f"window = {window}: the moving-average window must be an odd positive integer (paper: 3)")
    return int(window)


def moving_average(scores: Sequence[float] | np.ndarray, window: int = 3) -> np.ndarray:
    """Centred moving average of odd ``window`` where the window fits: length n - window + 1.

    Element j is the mean of scores[j .. j + window - 1] and belongs to the point j + (window - 1) / 2.
    Along the last axis, so a (B, n) array smooths B curves at once.
    """
    w = _check_window(window)
    y = np.asarray(scores, dtype=np.float64)
    if y.shape[-1] < w:
        return np.empty(y.shape[:-1] + (0,))
    return np.lib.stride_tricks.sliding_window_view(y, w, axis=-1).mean(axis=-1)


def _earliest_min(smoothed: np.ndarray) -> np.ndarray:
    """Index of the earliest minimum along the last axis, with a relative tie tolerance."""
    lo = smoothed.min(axis=-1, keepdims=True)
    scale = np.maximum(1.0, np.abs(smoothed).max(axis=-1, keepdims=True))
    return np.argmax(smoothed <= lo + _TIE_RTOL * scale, axis=-1)


def _order(task_indices: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted task indices, the sorting permutation); duplicates and non-finite values are errors."""
    x = np.asarray(task_indices, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise PlasticError(f"task indices must be a 1-D array of finite numbers, got {x.tolist()}")
    order = np.argsort(x, kind="stable")
    x = x[order]
    dup = x[1:][np.diff(x) == 0]
    if dup.size:
        raise PlasticError(f"duplicate task_index {_num(dup[0])}: each probe point must appear once")
    return x, order


def _sorted_curve(task_indices, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(scores, dtype=np.float64)
    if y.shape != np.shape(task_indices):
        raise PlasticError(f"{np.size(task_indices)} task indices but scores of shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise PlasticError("scores must be finite numbers")
    x, order = _order(task_indices)
    return x, y[order]


def find_onset(task_indices: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray,
               window: int = 3) -> Onset:
    """Onset of plasticity loss: task index of the earliest minimum of the window-w moving average.

    Points are sorted by task index first; duplicate task indices are an error. A minimum at the
    first smoothed point is a left-censored onset, one at the last is no onset (right-censored);
    the exact rule, ties and codes are in the module docstring (arXiv:2606.24752, "Onset").
    """
    w = _check_window(window)
    x, y = _sorted_curve(task_indices, scores)
    h = (w - 1) // 2
    s = moving_average(y, w)
    sx = x[h: x.size - h]  # empty when the window does not fit

    def result(onset: float | None, net: float | None, code: str) -> Onset:
        lower = float(sx[-1]) if code == "still_improving" else None
        return Onset(onset, net, onset_reason(code, onset, lower, x.size, w), w, x, y, sx, s, code)

    if s.size < 2:
        return result(None, None, "too_few_points")
    j = int(_earliest_min(s))
    net = _net_degradation(s, sx, j)
    if j == s.size - 1:
        return result(None, net, "still_improving")
    if j == 0:
        return result(float(sx[0]), net, "left_censored")
    return result(float(sx[j]), net, "onset")


def onset_reason(code: str, onset: float | None, lower_bound: float | None, n_points: int, window: int) -> str | None:
    """The sentence of an onset's ``code``: why there is no onset, or why it is censored; None for an
    interior onset. ``find_onset`` writes it, and a reader of a saved record (onsets.csv) rebuilds
    the same sentence from the code and the record's numbers. ``onset``: the left-censored onset;
    ``lower_bound``: the still-improving curve's last smoothed point; ``n_points``: probe points."""
    if code == "too_few_points":
        return (f"{n_points} probe point(s): the window-{window} moving average needs at least {window} points, "
                f"and telling a minimum from a start needs {window + 1}")
    if code == "still_improving":
        at = _num(lower_bound)
        return (f"the smoothed score is lowest at its last point (task_index {at}): it is still falling when the "
                f"probes end, so the onset is not before task_index {at} (a lower bound)")
    if code == "left_censored":
        return (f"the smoothed score is lowest at its first point (task_index {_num(onset)}): the onset is at or "
                "before it (left-censored; earlier probes would locate it)")
    return None if code == "onset" else REASON_CODES.get(code, code)


def earliest_locatable(task_indices: Sequence[float] | np.ndarray, window: int = 3) -> float | None:
    """The earliest task index ``find_onset`` can return for these probe points: the first smoothed
    point, x_h. An onset found there is left-censored (it may lie earlier, between probes the
    schedule does not have). None when there are too few points for any onset."""
    w = _check_window(window)
    x, _ = _order(task_indices)
    h = (w - 1) // 2
    return float(x[h]) if x.size >= w + 1 else None


def _net_degradation(s: np.ndarray, sx: np.ndarray, j: int) -> float | None:
    if s[j] > 0:
        return None
    after = np.nonzero(s[j + 1:] > 0)[0]
    return float(sx[j + 1 + after[0]]) if after.size else None


def _onset_of_smoothed(smoothed_BM: np.ndarray, smoothed_x: np.ndarray) -> np.ndarray:
    """Vectorised onsets of B smoothed curves (B, m): task index, NaN where none (same rule:
    a left-censored onset counts, a minimum at the last point does not)."""
    if smoothed_BM.shape[-1] < 2:
        return np.full(smoothed_BM.shape[0], np.nan)
    j = _earliest_min(smoothed_BM)
    return np.where(j < smoothed_BM.shape[-1] - 1, smoothed_x[j], np.nan)


# --------------------------------------------------------------------------------------------
# Bootstrap over validation sequences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnsetCI:
    """Bootstrap percentile interval of the onset task index."""

    ci: tuple[float, float] | None
    """(lower, upper) over the draws with an onset; None when no draw has one."""
    level: float
    n_boot: int
    fraction_null: float
    """Fraction of draws whose resampled curve has no onset."""
    seed: int
    draws: np.ndarray
    """Onset task index of every draw (NaN = no onset)."""

    def to_json(self) -> dict:
        return {
            "ci": None if self.ci is None else [_num(self.ci[0]), _num(self.ci[1])],
            "level": self.level,
            "n_boot": self.n_boot,
            "fraction_null": self.fraction_null,
            "seed": self.seed,
        }


def _resample(n_sequences: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_sequences) indices drawn with replacement; the one RNG path of both bootstraps."""
    if n_sequences < 1 or n_boot < 1:
        raise PlasticError(f"bootstrap needs >= 1 sequence and >= 1 draw, got {n_sequences} and {n_boot}")
    return np.random.default_rng(seed).integers(0, n_sequences, size=(n_boot, n_sequences))


def _interval(draws: np.ndarray, n_boot: int, seed: int, level: float) -> OnsetCI:
    """Percentile interval over the non-null draws.

    Onsets are discrete probe points, so the bounds are taken with numpy's ``lower`` method at
    (1 - level)/2 and ``higher`` at (1 + level)/2: each bound is an onset some draw produced and
    the interval is never narrower than the interpolated one.
    """
    if not 0 < level < 1:
        raise PlasticError(f"level = {level}: must be in (0, 1), e.g. 0.95")
    ok = draws[np.isfinite(draws)]
    ci = None
    if ok.size:
        lo = float(np.percentile(ok, 100 * (1 - level) / 2, method="lower"))
        hi = float(np.percentile(ok, 100 * (1 + level) / 2, method="higher"))
        ci = (lo, hi)
    return OnsetCI(ci, level, n_boot, (draws.size - ok.size) / draws.size, seed, draws)


def bootstrap_onset(
    score_fn: Callable[[np.ndarray], np.ndarray],
    n_sequences: int,
    task_indices: Sequence[float] | np.ndarray,
    *,
    window: int = 3,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> OnsetCI:
    """Bootstrap interval of the onset for any score: ``score_fn(idx)`` recomputes the score curve.

    ``idx`` is an int array of ``n_sequences`` validation-sequence indices drawn with replacement;
    ``score_fn`` returns the scores at ``task_indices`` computed on those sequences (resampling
    the reference too when it is measured on the same sequences). Deterministic given ``seed``;
    draws the same indices as ``onset_ci_from_curves`` for the same seed and sizes.
    """
    w = _check_window(window)
    x, order = _order(task_indices)
    h = (w - 1) // 2
    idx = _resample(n_sequences, n_boot, seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        y = np.asarray(score_fn(idx[b]), dtype=np.float64)[order]
        draws[b] = _onset_of_smoothed(moving_average(y, w)[None, :], x[h: x.size - h])[0]
    return _interval(draws, n_boot, seed, level)


def onset_ci_from_curves(
    curves: Sequence[np.ndarray],
    eval_steps: Sequence[float] | np.ndarray,
    task_indices: Sequence[float] | np.ndarray,
    *,
    reference: int | np.ndarray = 0,
    window: int = 3,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> OnsetCI:
    """Bootstrap interval of the onset of the dAUC curve, resampling validation sequences.

    ``curves[k]`` (n_eval_steps, n_sequences): per-sequence validation loss of probe k at each of
    ``eval_steps``; ``task_indices[k]`` its probe point. ``reference``: index of the reference
    probe in ``curves`` (default 0 = the first probe) or the scratch-baseline curve of the same
    shape. Each draw resamples the sequences once (same indices for all probes and the reference),
    recomputes dAUC_k = 100 (AUC_k / AUC_ref - 1) and its onset with ``find_onset``'s rule.
    """
    w = _check_window(window)
    if len(task_indices) != len(curves):
        raise PlasticError(f"{len(curves)} probe curves but {len(task_indices)} task indices")
    per_seq, ref = _sequence_aucs(curves, np.asarray(eval_steps), reference)
    x, order = _order(task_indices)
    n_seq = per_seq.shape[1]
    idx = _resample(n_seq, n_boot, seed)
    h = (w - 1) // 2
    draws = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # bounded memory: (256, n_seq) weights at a time
        chunk = idx[start: start + 256]
        weights = np.zeros((chunk.shape[0], n_seq))
        np.add.at(weights, (np.arange(chunk.shape[0])[:, None], chunk), 1.0 / n_seq)
        aucs_BK = weights @ per_seq[order].T  # resampled mean of per-sequence AUCs
        ref_B = weights @ ref
        scores_BK = 100.0 * (aucs_BK / ref_B[:, None] - 1.0)
        draws[start: start + chunk.shape[0]] = _onset_of_smoothed(moving_average(scores_BK, w), x[h: x.size - h])
    return _interval(draws, n_boot, seed, level)


def onset_document(result: Onset, source: str, tokens_per_task: int | None = None,
                   ci: OnsetCI | None = None) -> dict:
    """The JSON document of `plasticlm onset`: onset, tokens (given tokens per task), CI, smoothed curve.

    ``onset_tokens`` = onset_task_index * tokens_per_task (None without a run's tokens per task);
    ``ci95`` = the bootstrap interval over validation sequences (None without per-sequence probe
    losses); ``ci95_kind`` says so: it measures evaluation noise only, not training noise (seeds).
    """
    doc = result.to_json()
    onset = doc["onset_task_index"]
    return {
        "onset_task_index": onset,
        "onset_tokens": None if onset is None or tokens_per_task is None else int(onset * tokens_per_task),
        "code": doc["code"],
        "censored": doc["censored"],
        "lower_bound_task_index": doc["lower_bound_task_index"],
        "method": doc["method"],
        "window": doc["window"],
        "ci95": None if ci is None else ci.to_json()["ci"],
        "ci95_kind": None if ci is None else "validation_sequences",
        "smoothed": doc["smoothed"],
        "net_degradation_task_index": doc["net_degradation_task_index"],
        "reason": doc["reason"],
        "source": source,
        "n_points": int(result.task_index.size),
    }


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def read_scores_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(task_index, score) from a CSV with a header naming at least ``task_index`` and ``score``.

    Rows are returned sorted by task index. Raises ``PlasticError`` naming the file for a missing
    column, a non-numeric cell or a duplicate task index (with both line numbers).
    """
    cols = read_csv_columns(path, ["task_index", "score"])
    x, lines = cols["task_index"], cols["_line"]
    order = np.argsort(x, kind="stable")
    same = np.nonzero(np.diff(x[order]) == 0)[0]
    if same.size:
        a, b = sorted((int(lines[order[same[0]]]), int(lines[order[same[0] + 1]])))
        raise PlasticError(
            f"{path}: duplicate task_index {_num(x[order[same[0]]])} on lines {a} and {b}; "
            "each probe point must appear once"
        )
    return x[order], cols["score"][order]


# --------------------------------------------------------------------------------------------
# Several seeds of one size: training noise
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedOnset:
    """The onset of one size from several runs (seeds): the onset of the seed-averaged score curve,
    each seed's own onset, and a bootstrap interval over runs (module docstring, "Seeds")."""

    mean_curve: Onset
    """``find_onset`` of the mean score over seeds at each probe point."""
    seed_onsets: list[Onset]
    ci: OnsetCI | None
    """Percentile interval of the mean curve's onset over draws of runs with replacement."""

    @property
    def onset_task_index(self) -> float | None:
        return self.mean_curve.onset_task_index

    @property
    def spread(self) -> tuple[float, float] | None:
        """(min, max) of the seeds' onsets (None when no seed has one)."""
        found = [o.onset_task_index for o in self.seed_onsets if o.onset_task_index is not None]
        return (min(found), max(found)) if found else None

    @property
    def seeds_agree(self) -> bool:
        """Every seed has the same outcome code and the same onset (or none)."""
        first = self.seed_onsets[0]
        return all((o.code, o.onset_task_index) == (first.code, first.onset_task_index) for o in self.seed_onsets)

    def to_json(self) -> dict:
        doc = self.mean_curve.to_json()
        return {
            "n_seeds": len(self.seed_onsets),
            "onset_task_index": doc["onset_task_index"],
            "code": doc["code"],
            "censored": doc["censored"],
            "lower_bound_task_index": doc["lower_bound_task_index"],
            "reason": doc["reason"],
            "seed_onsets": [_num(o.onset_task_index) for o in self.seed_onsets],
            "seed_codes": [o.code for o in self.seed_onsets],
            "seeds_agree": self.seeds_agree,
            "ci95_runs": None if self.ci is None else self.ci.to_json()["ci"],
            "ci_runs_fraction_null": None if self.ci is None else self.ci.fraction_null,
        }


def seed_onset(task_indices: Sequence[float] | np.ndarray, scores_SN: Sequence[Sequence[float]] | np.ndarray,
               *, window: int = 3, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> SeedOnset:
    """The onset of a size measured with S runs (seeds) probed at the same N points.

    ``scores_SN[s]`` is run s's score curve (dAUC) at ``task_indices``. Returns the onset of the
    seed-averaged curve, each run's onset, and a bootstrap interval over runs: each draw takes S
    runs with replacement, averages their curves and finds the onset (same rule as ``find_onset``);
    with S = 1 there is no interval. This is the uncertainty that training noise (initialisation,
    and through it the whole trajectory) puts on the onset, which the validation-sequence bootstrap
    of one run cannot see. Averaging scores before smoothing is the same as smoothing each and
    averaging (both are linear).
    """
    w = _check_window(window)
    y = np.asarray(scores_SN, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != np.size(task_indices) or y.shape[0] < 1:
        raise PlasticError(f"seed scores must be (n_seeds, {np.size(task_indices)} probe points), got {y.shape}")
    x, order = _order(task_indices)
    y = y[:, order]
    per_seed = [find_onset(x, row, w) for row in y]
    mean = find_onset(x, y.mean(axis=0), w)
    ci = None
    if y.shape[0] > 1 and n_boot > 0:
        h = (w - 1) // 2
        idx = _resample(y.shape[0], n_boot, seed)  # (B, S) runs drawn with replacement
        draws = _onset_of_smoothed(moving_average(y[idx].mean(axis=1), w), x[h: x.size - h])
        ci = _interval(draws, n_boot, seed, level)
    return SeedOnset(mean, per_seed, ci)
