"""`plasticlm diagnose RUN_DIR|CHECKPOINT_DIR`: plasticity diagnostics of saved checkpoints."""

from __future__ import annotations

from pathlib import Path

from plasticlm.cli._common import add_json, print_json, print_table
from plasticlm.errors import PlasticError


def _options(args):
    from plasticlm.diagnose import DiagnoseOptions

    return DiagnoseOptions(sequences=args.sequences, attn_sequences=args.attn_sequences,
                           attn_language=args.attn_language, query_start=args.query_start, chunk=args.chunk,
                           batch_size=args.batch_size, rank_tokens=args.rank_tokens, eps=args.eps,
                           grads=not args.no_grads, hessian=args.hessian, hessian_iters=args.hessian_iters)


def _headline(row: dict) -> dict:
    def f(key: str, fmt: str = ".4g") -> str:
        v = row.get(key)
        return "-" if v is None else format(v, fmt)

    return {"checkpoint": row["checkpoint"], "task_index": row["task_index"], "tokens_seen": row["tokens_seen"],
            "dormant": f("diag/mlp/dormant"), "lazy_heads": f("diag/attn/lazy", "d"),
            "collapsed_heads": f("diag/attn/collapsed", "d"), "mean_abs": f("diag/params/mean_abs"),
            "drift": f("diag/params/drift"), "seconds": row["seconds"]}


COLUMNS = ["checkpoint", "task_index", "tokens_seen", "dormant", "lazy_heads", "collapsed_heads", "mean_abs",
           "drift", "seconds"]


def run(args) -> int:
    from plasticlm.diagnose import diagnose_checkpoint, diagnose_run_dir, run_document

    path = Path(args.path)
    options = _options(args)
    if (path / "meta.json").exists() and not (path / "config.toml").exists():
        if args.checkpoint:
            raise PlasticError("--checkpoint selects a checkpoint of a run directory; here PATH is a checkpoint")
        row = diagnose_checkpoint(path, options=options, device=args.device)
        if args.json:
            print_json(row)
        else:
            print_table([_headline(row)], COLUMNS)
            print("(every value: plasticlm diagnose --json)")
        return 0
    if not (path / "config.toml").exists():
        raise PlasticError(f"{path} is neither a run directory (config.toml) nor a checkpoint directory "
                           "(meta.json): give RUN_DIR or RUN_DIR/checkpoints/task-NNNNNN")
    rows = diagnose_run_dir(path, workers=args.workers, checkpoint=args.checkpoint, options=options,
                            progress=not (args.quiet or args.json), device=args.device)
    if args.json:
        print_json(run_document(path, rows))
        return 0
    if not rows:
        print(f"{path}: nothing to diagnose (every saved checkpoint at a probe point already has a row in "
              "diagnostics.jsonl)")
        return 0
    print_table([_headline(r) for r in rows], COLUMNS)
    print(f"appended to {path / 'diagnostics.jsonl'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "diagnose", help="plasticity diagnostics (dormancy, ranks, attention entropy, norms) of saved checkpoints",
        description="For a checkpoint directory: print its diagnostics. For a run directory: diagnose every saved "
        "checkpoint at the run's probe points that has no row in RUN_DIR/diagnostics.jsonl yet (like `plasticlm "
        "probe`) and append one row each. Computed in eval mode on fixed validation windows: the probe language "
        "for MLP dormancy, feature norms and ranks; a training language for attention entropy. --json for a run "
        "directory also gives the forgetting matrix (validation bpb per language after each task) and each "
        "diagnostic's Spearman correlation with the probe score and its lead/lag against the onset.",
    )
    p.add_argument("path", metavar="RUN_DIR|CHECKPOINT_DIR",
                   help="a run directory, or one checkpoint (RUN_DIR/checkpoints/task-NNNNNN)")
    p.add_argument("--checkpoint",
                   help="in a run directory, only this checkpoint (task-000007 or a 0-based task index)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (torch threads are divided)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or auto (default: the run's train.device)")
    p.add_argument("--sequences", type=int, default=8,
                   help="probe-language validation windows for dormancy, ranks and feature norms (default 8)")
    p.add_argument("--attn-sequences", type=int, default=4,
                   help="training-language validation windows for attention entropy (default 4)")
    p.add_argument("--attn-language", default="", help="language of the attention windows (default: the first "
                   "training language)")
    p.add_argument("--query-start", type=int, default=-1, help="first query position of the entropy window "
                   "(default seq_len // 8, the paper's 256 of 2048)")
    p.add_argument("--chunk", type=int, default=256, help="queries per chunk in the attention entropy (memory)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--rank-tokens", type=int, default=4096, help="most token rows per layer in a rank metric "
                   "(default 4096)")
    p.add_argument("--eps", type=float, default=0.01, help="dormancy threshold on the layer-normalised score "
                   "(default 0.01, arXiv 2606.24752)")
    p.add_argument("--no-grads", action="store_true", help="skip the backward pass (GraMa, gradient norms)")
    p.add_argument("--hessian", action="store_true", help="also the top Hessian eigenvalue (costly)")
    p.add_argument("--hessian-iters", type=int, default=20, help="power iterations for --hessian (default 20)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(p)
    p.set_defaults(func=run)
