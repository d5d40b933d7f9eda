"""`plasticlm probe RUN_DIR`: post-hoc plasticity probes of a run's saved checkpoints."""

from __future__ import annotations

import shlex

from plasticlm.cli import probe_hf_cmd
from plasticlm.cli._common import add_json, positive_int, print_json, print_table
from plasticlm.validate import require_run_dir


def print_jobs(args) -> int:
    """One `plasticlm probe RUN_DIR --checkpoint NAME` command per pending probe, for any scheduler."""
    from plasticlm.probe import pending_checkpoints

    jobs = [shlex.join(["plasticlm", "probe", str(args.run_dir), "--checkpoint", name])
            for name in pending_checkpoints(args.run_dir, args.checkpoint)]
    if args.json:
        print_json({"run_dir": args.run_dir, "jobs": jobs})
    else:
        for job in jobs:
            print(job)
    return 0


def run(args) -> int:
    from plasticlm import dist
    from plasticlm.probe import probe_run_dir

    if args.model:
        return probe_hf_cmd.run(args)
    probe_hf_cmd.check_run_dir_args(args)
    require_run_dir(args.run_dir)
    if args.print_jobs:
        return print_jobs(args)
    try:
        rows = probe_run_dir(args.run_dir, workers=args.workers, checkpoint=args.checkpoint,
                             progress=not (args.quiet or args.json) and dist.env_world_size() == 1)
        main = dist.is_main()  # under torchrun, rank 0 alone reports
    finally:
        dist.teardown()
    if not main:
        return 0
    if args.json:
        print_json({"run_dir": args.run_dir, "probed": [{k: v for k, v in r.items() if k != "curve"} for r in rows]})
        return 0
    if not rows:
        print(f"{args.run_dir}: nothing to probe (every probe point already has a row in probes.jsonl)")
        return 0
    print_table([{"checkpoint": r["checkpoint"], "task_index": r["task_index"], "tokens_seen": r["tokens_seen"],
                  "auc": f"{r['auc']:.4f}", "final_loss": f"{r['final_loss']:.4f}",
                  "dauc_scratch": "-" if r["dauc_scratch"] is None else f"{r['dauc_scratch']:+.2f}",
                  "seconds": r["seconds"]} for r in rows],
                ["checkpoint", "task_index", "tokens_seen", "auc", "final_loss", "dauc_scratch", "seconds"])
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "probe", help="probe a run's saved checkpoints (post hoc, in parallel), skipping probed ones",
        description="Trains a copy of each checkpoint at the run's probe points on the probe language "
        "(arXiv:2606.24752 'Probe') and appends one row per probe to RUN_DIR/probes.jsonl. Checkpoints "
        "that already have a row are skipped, so re-running probes nothing; --checkpoint probes one "
        "(for cluster array jobs). With --model DIR CONFIG it probes a Hugging Face transformers causal LM, "
        "or each checkpoint of a series of them, with the config's probe recipe and data, and finds the onset.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR|CONFIG",
                   help="a run directory written by `plasticlm train`; with --model, the config whose probe "
                   "settings and data source to use")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="parallel worker processes (torch threads are divided)")
    p.add_argument("--checkpoint", help="probe only this checkpoint (name like task-000007, or its 0-based task index)")
    p.add_argument("--print-jobs", action="store_true",
                   help="print one `plasticlm probe RUN_DIR --checkpoint NAME` command per pending probe (for any "
                   "scheduler) and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    probe_hf_cmd.add_arguments(p)
    add_json(p)
    p.set_defaults(func=run)
