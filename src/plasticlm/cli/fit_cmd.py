"""`plasticlm fit --onsets FILE.csv`: scaling laws of the onset against model size."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from plasticlm.cli._common import add_json, print_json, print_table
from plasticlm.errors import PlasticError
from plasticlm.scaling import FORMS, ScalingFit, check_forms, fit_scaling, read_onsets_csv
from plasticlm.units import num, parse_count


def _floats(text: str, what: str) -> list[float]:
    try:
        return [parse_count(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PlasticError(f"{what} = {text!r}: expected comma-separated numbers, e.g. 1e9,7e9 or 1B,7B") from None


def _count(text: str) -> float:
    """argparse type for a count such as 5e9 or 5B."""
    try:
        return parse_count(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; write e.g. 5e9 or 5B") from None


def _g(x: float | None, fmt: str = ".4g") -> str:
    """``units.num`` with this command's default of four significant digits."""
    return num(x, fmt)


def _print_human(fit: ScalingFit, source: str, skipped: list[int], figure: str | None,
                 excluded: int) -> None:
    n_sizes = np.unique(fit.params).size
    n_cens = 0 if fit.left_censored is None else int(fit.left_censored.sum())
    print(f"{source}: {fit.params.size} onsets at {n_sizes} sizes"
          + (f", {n_cens} of them left-censored (at or before their value; fitted as the paper did)"
             if n_cens else "")
          + (f"; left out {excluded} left-censored onset(s) (--exclude-left-censored)" if excluded else "")
          + (f" (skipped rows without an onset: lines {', '.join(map(str, skipped))})" if skipped else ""))
    rows = []
    for name, f in fit.fits.items():
        rows.append({"form": name, "law": f.law, "a": _g(f.a), "b": _g(f.b), "b_se": _g(f.b_se),
                     "b_ci95": f"[{_g(f.b_ci95[0])}, {_g(f.b_ci95[1])}]", "r2": _g(f.r2, ".3f"),
                     "rmse": _g(f.rmse), "loo_rmse": _g(f.loo_rmse),
                     "best": "*" if name == fit.best_by_loo else ""})
    print_table(rows, ["form", "law", "a", "b", "b_se", "b_ci95", "r2", "rmse", "loo_rmse", "best"])
    print(f"best by leave-one-out RMSE: {fit.best_by_loo}")
    power = fit.fits.get("power")
    if power is not None and power.b_boot95 is not None:
        print(f"power-law exponent b = {power.b:.4g}, bootstrap 95% CI over sizes "
              f"[{power.b_boot95[0]:.4g}, {power.b_boot95[1]:.4g}] ({power.b_boot_n} usable draws)")
    if power is not None and power.b_runs_boot95 is not None:
        print(f"bootstrap 95% CI of b over runs within sizes (seed spread): "
              f"[{power.b_runs_boot95[0]:.4g}, {power.b_runs_boot95[1]:.4g}]")
    if fit.extrapolations:
        print("extrapolation of the power law (95% prediction interval):")
        print_table([{"params": f"{e.params:.4g}", "onset (tasks)": _g(e.onset),
                      "pi95 (tasks)": f"[{_g(e.pi95[0])}, {_g(e.pi95[1])}]",
                      "tokens": _g(e.tokens, ".3g"),
                      "pi95 (tokens)": "-" if e.tokens_pi95 is None
                      else f"[{_g(e.tokens_pi95[0], '.3g')}, {_g(e.tokens_pi95[1], '.3g')}]"}
                     for e in fit.extrapolations],
                    ["params", "onset (tasks)", "pi95 (tasks)", "tokens", "pi95 (tokens)"])
    if figure:
        print(f"figure: {figure}")


def run(args) -> int:
    from plasticlm.report.figures import plot_onset_fit

    forms = check_forms([f.strip() for f in args.forms.split(",") if f.strip()])
    sizes = _floats(args.extrapolate, "--extrapolate")
    if args.figure and "power" not in forms:
        raise PlasticError("--figure draws the power law: include 'power' in --forms")
    if args.tokens_per_task is not None and args.tokens_per_task <= 0:
        raise PlasticError(f"--tokens-per-task = {args.tokens_per_task:g}: must be > 0 (paper: 5e9)")
    if args.bootstrap < 0:
        raise PlasticError(f"--bootstrap = {args.bootstrap}: must be >= 0 (0 = no bootstrap)")
    params, onsets, skipped, cens = read_onsets_csv(args.onsets)
    excluded = 0
    if args.exclude_left_censored:
        excluded = int(cens.sum())
        params, onsets, cens = params[~cens], onsets[~cens], cens[~cens]
    try:
        fit = fit_scaling(params, onsets, forms, sizes, args.tokens_per_task, args.bootstrap, args.seed,
                          left_censored=cens)
    except PlasticError as e:
        raise PlasticError(f"{args.onsets}: {e}") from e
    if args.figure:
        plot_onset_fit(fit, args.figure)
    if args.json:
        doc = fit.to_json()
        doc.update(source=args.onsets, skipped_lines=skipped, figure=args.figure, excluded_left_censored=excluded)
        print_json(doc)
    else:
        _print_human(fit, args.onsets, skipped, args.figure, excluded)
    if skipped and args.json:
        print(f"note: skipped {len(skipped)} row(s) without an onset in {args.onsets}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "fit", help="fit scaling laws of the onset against non-embedding parameters",
        description="Fit T = a P^b (OLS on ln P, ln T, as in arXiv:2606.24752) and the linear, linear-log "
        "and exponential alternatives; report b, a, b_se, b_ci95, R^2 in linear space, RMSE and "
        "leave-one-out RMSE in task instances, bootstrap CIs of b over sizes and over runs within sizes "
        "(seeds), the best form by LOO RMSE, "
        "and power-law extrapolations with 95%% prediction intervals. Formulas: src/plasticlm/scaling.py.",
    )
    p.add_argument("--onsets", required=True, metavar="FILE.csv",
                   help="CSV with columns params,onset (onset in task instances; one row per run, so several "
                   "rows per size are seeds; empty onset = run skipped; an optional column censored = left "
                   "marks a left-censored onset; other columns ignored)")
    p.add_argument("--exclude-left-censored", action="store_true",
                   help="leave out left-censored onsets (default: fit them at their value, as the paper did)")
    p.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated forms (default {','.join(FORMS)})")
    p.add_argument("--extrapolate", default="", metavar="P1,P2",
                   help="sizes (non-embedding params) to extrapolate the power law to, e.g. 1e9,7e9")
    p.add_argument("--tokens-per-task", type=_count, default=None, metavar="N",
                   help="tokens per task instance, to report extrapolations in tokens (paper: 5e9)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="B",
                   help="bootstrap draws for the CI of b (default 2000; 0 = off)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--figure", default=None, metavar="PATH", help="write the onset-vs-size figure (png, pdf, svg)")
    add_json(p)
    p.set_defaults(func=run)
