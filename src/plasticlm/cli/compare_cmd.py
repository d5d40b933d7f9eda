"""`plasticlm compare`: mitigations x seeds at matched compute, tested against the baseline."""

from __future__ import annotations

from plasticlm.cli._common import add_json, add_launcher, add_set, load_config, positive_int, print_json, print_table
from plasticlm.units import num


def _onset(r: dict) -> str:
    if r["onset_task_index"] is None:
        return "-" if r["onset_code"] is None else r["onset_code"]
    at = f"<= {r['onset_task_index']}" if r["onset_code"] == "left_censored" else str(r["onset_task_index"])
    ci = "" if r["onset_ci95_low"] is None else f" [{r['onset_ci95_low']}, {r['onset_ci95_high']}]"
    return at + ci


def _p(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def run_compare_cmd(args) -> int:
    from plasticlm.compare import run_compare

    cfg = load_config(args.config, args.overrides)
    doc = run_compare(cfg, args.out_dir, config_path=args.config, parallel=args.parallel,
                      quiet=args.quiet or args.json, launcher=args.launcher)
    if args.json:
        print_json(doc)
        return 0
    print(f"study directory: {doc['study_dir']} ({doc['runs']} runs: {len(doc['methods'])} methods x "
          f"{len(doc['seeds'])} seeds per preset)")
    rows = []
    for r in doc["rows"]:
        rows.append({
            "size": r["preset"], "method": r["method"], "seeds": r["n_seeds"],
            "onset [95% CI]": _onset(r), "seed onsets": ", ".join("none" if x is None else str(x)
                                                                  for x in r["seed_onsets"]) or "-",
            "p onset": _p(r["p_onset"]), "dAUC last": num(r["dauc_last"]), "area dAUC": num(r["auc_dauc"]),
            "p area": _p(r["p_auc_dauc"]),
            "final bpb": " ".join(f"{lang}:{num(v, '.3f')}" for lang, v in r["final_bpb"]),
            "forgetting": num(r["mean_forgetting"]),
            "extra FLOPs": "-" if r["extra_flops_fraction"] is None else f"{100 * r['extra_flops_fraction']:.2g}%",
            "wall": "-" if r["wall_overhead"] is None else f"{100 * r['wall_overhead']:+.0f}%",
        })
    print_table(rows, ["size", "method", "seeds", "onset [95% CI]", "seed onsets", "p onset", "dAUC last",
                       "area dAUC", "p area", "final bpb", "forgetting", "extra FLOPs", "wall"])
    unmatched = [p for p, m in doc["matched_compute"].items() if not m["matched"]]
    print("\nonset: of the seed-averaged dAUC curve, task instances, with a 95% bootstrap CI over seeds; p: Welch "
          "t-test against the baseline over seeds (onsets; area under the dAUC curve, lower = more plasticity "
          "kept); final bpb: validation bits per byte of the training languages; forgetting: mean final - best "
          "bpb; extra FLOPs: per training step; wall: time against the baseline.")
    print("matched compute: " + ("every method of a size read the same training and probe tokens" if not unmatched
                                 else f"NOT for {', '.join(unmatched)} (see --json)"))
    print(f"table: {doc['compare_csv']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="mitigations x seeds at matched compute, each tested against the baseline",
        description="Trains (resumably) every preset x seed x method of sweep.methods ('baseline' and mitigations, "
        "each with its [mitigations.<method>] table) with the same training tokens and probes, then prints per "
        "method the onset with a 95%% CI over seeds, dAUC at the last probe and the area under the dAUC curve, "
        "final validation bpb per training language, forgetting, extra FLOPs and wall-time overhead, and Welch "
        "t-tests against the baseline. Writes STUDY_DIR/compare.csv.",
    )
    p.add_argument("config", help="TOML study config with sweep.methods, e.g. configs/micro/mitigations.toml")
    add_set(p)
    p.add_argument("--out-dir", help="study directory (default: sweep.out_dir)")
    p.add_argument("--parallel", type=positive_int, default=None, help="runs trained at once (default: sweep.parallel)")
    add_launcher(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json(p)
    p.set_defaults(func=run_compare_cmd)
