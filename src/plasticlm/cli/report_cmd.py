"""`plasticlm report DIR`: the HTML report of a study or run directory."""

from __future__ import annotations

from plasticlm.cli._common import add_json, print_json
from plasticlm.errors import PlasticError


def run(args) -> int:
    from plasticlm.report.build import make_report

    if args.bootstrap is not None and args.bootstrap < 0:
        raise PlasticError(f"--bootstrap = {args.bootstrap}: must be >= 0 (0 = no CI)")
    report = make_report(args.dir, n_boot=args.bootstrap)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.index)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="write the HTML report of a study or run directory (DIR/report/index.html)",
        description="Reads only the files in DIR (study.json, onsets.csv, sizes.csv, fit.json, runs/*/metrics.jsonl, "
        "probes.jsonl, run.json, config.toml) and writes DIR/report/index.html with its PNG figures: a "
        "summary, probe scores over training with the onset (arXiv:2606.24752 Figure 2), onset vs model "
        "size with the fitted power law (Figure 3), fit statistics, continual vs stationary, validation "
        "bits per byte, the scratch baseline and the runs' configs. Sections whose inputs are missing "
        "say why. Prints the page's path.",
    )
    p.add_argument("dir", metavar="DIR",
                   help="a study directory (plasticlm study) or a run directory (plasticlm train)")
    p.add_argument("--bootstrap", type=int, default=None, metavar="B",
                   help="bootstrap draws for the onset of a run directory (a study's onsets are read from "
                   "onsets.csv; default: the run's probe.bootstrap)")
    add_json(p)
    p.set_defaults(func=run)
