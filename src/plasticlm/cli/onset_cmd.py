"""`plasticlm onset --scores FILE.csv`: the onset of plasticity loss on a probe-score curve."""

from __future__ import annotations

from plasticlm.analysis import onset_of_run
from plasticlm.cli._common import add_json, non_negative_int, print_json, print_table
from plasticlm.config import AnalysisConfig, load_config
from plasticlm.errors import PlasticError
from plasticlm.onset import Onset, find_onset, onset_document, read_scores_csv
from plasticlm.units import num
from plasticlm.validate import require_run_dir


def _print_human(doc: dict, result: Onset) -> None:
    smoothed = {s["task_index"]: s["score"] for s in doc["smoothed"]}
    rows = []
    for xi, yi in zip(result.task_index.tolist(), result.score.tolist()):
        key = int(xi) if float(xi).is_integer() else xi
        marks = [name for name, at in (("onset", doc["onset_task_index"]),
                                       ("net degradation", doc["net_degradation_task_index"])) if at == key]
        rows.append({"task_index": key, "score": f"{yi:.4g}",
                     "smoothed": f"{smoothed[key]:.4g}" if key in smoothed else "-",
                     "": " ".join(f"<- {m}" for m in marks)})
    print(f"{doc['source']}: {doc['n_points']} probe points, window {doc['window']} ({doc['method']})")
    print_table(rows, ["task_index", "score", "smoothed", ""])
    if doc["onset_task_index"] is None:
        print(f"onset: none [{doc['code']}] ({doc['reason']})")
    elif doc["code"] == "left_censored":
        print(f"onset: at or before task_index {doc['onset_task_index']} [left_censored] ({doc['reason']})")
    else:
        print(f"onset: task_index {doc['onset_task_index']} [onset]")
    net = doc["net_degradation_task_index"]
    print(f"net degradation (smoothed score > 0 after the minimum): {'none' if net is None else f'task_index {net}'}")


def run(args) -> int:
    if (args.run_dir is None) == (args.scores is None):
        raise PlasticError("give either a RUN_DIR or --scores FILE.csv (not both)")
    if args.run_dir is not None:
        run_dir = require_run_dir(args.run_dir)
        if args.window is None:  # the run's own analysis.window
            args.window = load_config(run_dir / "config.toml").analysis.window
        result, doc = onset_of_run(args.run_dir, window=args.window, n_boot=args.bootstrap, seed=args.seed,
                                   reference=args.reference)
    else:
        args.window = AnalysisConfig.window if args.window is None else args.window
        x, y = read_scores_csv(args.scores)
        result = find_onset(x, y, args.window)
        doc = onset_document(result, args.scores)
    if doc["n_points"] < args.window + 2:
        raise PlasticError(
            f"{doc['source']}: {doc['n_points']} probe point(s); an onset (the interior minimum of the window-"
            f"{args.window} moving average) needs at least {args.window + 2}: add probe points "
            f"({'`plasticlm probe`, or train longer' if args.run_dir else 'more rows'})"
        )
    if args.json:
        print_json(doc)
    else:
        _print_human(doc, result)
        if doc.get("ci95"):
            print(f"95% bootstrap CI of the onset over validation sequences: {doc['ci95']} (evaluation noise "
                  "only; training noise needs several seeds: `plasticlm study` with sweep.seeds)")
        noise = doc.get("probe_noise")
        if noise:
            print(f"probe noise: {noise['replicates']} replicates per probe, sd {noise['sd_dauc']:.3g} dAUC points "
                  f"per replicate, {noise['se_dauc']:.3g} for their mean; signal (range of the smoothed score) "
                  f"{num(noise['signal_dauc'], '.3g')}")
        if doc.get("onset_tokens") is not None:
            print(f"onset at {doc['onset_tokens']:,} training tokens")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "onset", help="the onset of plasticity loss of a run (RUN_DIR) or of a score curve (--scores)",
        description="Onset = the task index of the earliest minimum of the centred window-w moving "
        "average of the probe score (arXiv:2606.24752). The first and last (w-1)/2 points are never "
        "the onset. A minimum at the first smoothed point is an onset at or before it (code "
        "left_censored); one at the last smoothed point is no onset yet (code still_improving, with a "
        "lower bound); fewer than w+1 points: too_few_points. Also reports the net-degradation point: "
        "the first point after the minimum whose smoothed score is > 0.",
    )
    p.add_argument("run_dir", nargs="?", help="a run directory with probes.jsonl (scores = dAUC)")
    p.add_argument("--scores", metavar="FILE.csv",
                   help="CSV with a header and columns task_index,score (other columns ignored)")
    p.add_argument("--reference", choices=["first", "scratch"], default="first",
                   help="RUN_DIR: score against the first probe (paper) or the scratch baseline (appendix)")
    p.add_argument("--bootstrap", type=non_negative_int, default=None,
                   help="RUN_DIR: bootstrap draws for the CI (default: probe.bootstrap of the run; 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--window", type=int, default=None,
                   help=f"odd moving-average window (default: the run's analysis.window; {AnalysisConfig.window}, as "
                   "in the paper, for --scores)")
    add_json(p)
    p.set_defaults(func=run)
