"""`plasticlm sweep` and `plasticlm study`."""

from __future__ import annotations

import textwrap

from plasticlm.cli._common import add_json, add_launcher, add_set, load_config, positive_int, print_json, print_table
from plasticlm.units import num


def _onset_cell(onset, code, lower_bound) -> str:
    """An onset for the terminal: "24", "<= 24" (left-censored), ">= 96" (still improving) or "-"."""
    if onset is not None:
        return f"<= {onset}" if code == "left_censored" else str(onset)
    return f">= {lower_bound}" if lower_bound is not None else "-"


def _print_onsets(summary: dict) -> None:
    rows = [{"run": r["name"], "params": r["non_embedding_params"],
             "onset (tasks)": _onset_cell(r["onset_task_index"], r["code"], r["lower_bound_task_index"]),
             "code": r["code"],
             "onset tokens": "-" if r["onset_tokens"] is None else f"{r['onset_tokens']:,}",
             "95% CI (val. sequences)": "-" if r["onset_task_index"] is None or r["seq_ci95_low"] is None
             else f"[{r['seq_ci95_low']}, {r['seq_ci95_high']}]",
             "net degradation tokens": "-" if r["net_degradation_tokens"] is None
             else f"{r['net_degradation_tokens']:,}"}
            for r in summary["onsets"]]
    print_table(rows, ["run", "params", "onset (tasks)", "code", "onset tokens", "95% CI (val. sequences)",
                       "net degradation tokens"])
    sizes = [z for z in summary.get("sizes", []) if z["n_seeds"] > 1]
    if sizes:
        print("\nPer size over seeds (onset of the seed-averaged curve; CI: bootstrap over runs, training noise "
              "included):")
        print_table([{"size": z["preset"], "stream": z["stream"], "seeds": z["n_seeds"],
                      "onset (tasks)": _onset_cell(z["onset_task_index"], z["code"], z["lower_bound_task_index"]),
                      "95% CI (runs)": "-" if z["runs_ci95_low"] is None
                      else f"[{z['runs_ci95_low']}, {z['runs_ci95_high']}]",
                      "seeds' onsets": ", ".join("none" if x is None else str(x) for x in z["seed_onsets"] or ()),
                      "agree": "yes" if z["seeds_agree"] else "no"} for z in sizes],
                    ["size", "stream", "seeds", "onset (tasks)", "95% CI (runs)", "seeds' onsets", "agree"])


def _print_fit(fit: dict) -> None:
    if "error" in fit:
        print(f"scaling-law fit: not possible ({fit['error']})")
    else:
        p = fit["fits"]["power"]
        lo, hi = p["b_ci95"]
        runs = p.get("b_runs_boot95")
        seeds = f", over runs [{num(runs[0])}, {num(runs[1])}]" if runs else ""
        print(f"power law T = a P^b: b = {p['b']:.3f} (95% CI [{num(lo)}, {num(hi)}]{seeds}), "
              f"R^2 = {num(p['r2'], '.3f')}; best form by leave-one-out RMSE: {fit['best_by_loo']}")


def run_sweep_cmd(args) -> int:
    from plasticlm.sweep import run_sweep

    cfg = load_config(args.config, args.overrides)
    summary = run_sweep(cfg, args.out_dir, config_path=args.config, parallel=args.parallel,
                        quiet=args.quiet or args.json, train=not args.no_train, launcher=args.launcher)
    if args.json:
        print_json(summary)
    else:
        print(f"study directory: {summary['study_dir']} ({summary['runs']} runs)")
        _print_onsets(summary)
        _print_fit(summary["fit"])
    return 0


def run_study_cmd(args) -> int:
    from plasticlm.study import dry_run, dry_run_jobs, run_study

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        plan = dry_run_jobs(cfg) if args.launcher == "slurm" else dry_run(cfg)
        if args.json:
            print_json(plan)
            return 0
        print(f"study {args.config} -> {plan['study_dir']} (source: {plan['source']})")
        print("stages: " + " -> ".join(plan["stages"]) + " (each skips what is already done)")
        print_table(plan["runs"], ["name", "status", "non_embedding_params", "tokens", "steps", "probes"])
        if "jobs" in plan:
            print("\ncluster jobs per preset (time limits from the plan x slurm.time_factor):")
            print_table(plan["jobs"], ["preset", "train_minutes", "gpus_per_run", "mem_gb", "probe_minutes",
                                       "probes_per_run"])
        return 0
    summary = run_study(cfg, config_path=args.config, parallel=args.parallel, quiet=args.quiet or args.json,
                        launcher=args.launcher)
    if args.json:
        print_json(summary)
        return 0
    print()
    _print_onsets(summary)  # no fit line: the summary below states the fit with its caveats
    print("\nSummary (the top of the report):")
    for item in summary.get("report_summary", []):
        print(textwrap.fill(item, width=100, initial_indent="- ", subsequent_indent="  "))
    print(f"\nreport: {summary['report']}")
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "sweep", help="train a study config over its presets and seeds, then probes, onsets and the fit",
        description="One run directory per preset x seed (x stationary) under sweep.out_dir; resumable "
        "(finished runs are skipped, an interrupted one resumes). Writes onsets.csv (per run), sizes.csv "
        "(per size over seeds) and fit.json.",
    )
    s.add_argument("config", help="TOML study config, e.g. configs/demo.toml")
    add_set(s)
    s.add_argument("--out-dir", help="study directory (default: sweep.out_dir)")
    s.add_argument("--parallel", type=positive_int, default=None, help="runs trained at once (default: sweep.parallel)")
    add_launcher(s)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--no-train", action="store_true",
                   help="train nothing: analyse the finished runs as they stand (a study still running or stopped "
                   "early); the others are listed as not_finished")
    add_json(s)
    s.set_defaults(func=run_sweep_cmd)

    p = sub.add_parser(
        "study", help="the whole study: corpus -> runs -> probes -> onsets -> fit -> report",
        description="Builds what is missing (corpus, tokenizer, shards), runs the sweep, probes, detects "
        "onsets, fits the scaling law and writes STUDY_DIR/report/index.html. Resumable at every stage. Ends by "
        "printing the onsets, the report's summary and the report's path (--json: all of it as one document).",
    )
    p.add_argument("config", help="TOML study config, e.g. configs/demo.toml")
    add_set(p)
    p.add_argument("--parallel", type=positive_int, default=None, help="runs trained at once (default: sweep.parallel)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs, status, tokens) and exit")
    add_launcher(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json(p)
    p.set_defaults(func=run_study_cmd)
