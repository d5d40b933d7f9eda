"""`plasticlm train`, `plasticlm resume` and `plasticlm bench`."""

from __future__ import annotations

from pathlib import Path

from plasticlm.cli._common import add_json, add_set, load_config, print_json, print_table
from plasticlm.validate import require_run_dir


def default_run_dir(config_path: str, cfg) -> Path:
    name = cfg.model.preset or f"d{cfg.model.depth or cfg.model.n_layer}"
    return Path("runs") / f"{Path(config_path).stem}-{name}-{cfg.stream.kind}-s{cfg.train.seed}"


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    print(f"run directory: {summary['run_dir']}")
    print(f"steps {summary['steps']}  tokens {summary['tokens']:,}  wall {summary['wall_time_s']} s  "
          f"peak LR {summary['peak_lr']:.3g}")
    final = summary.get("final", {})
    bpb = {k.split("/")[1]: v for k, v in final.items() if k.endswith("/bpb")}
    if bpb:
        print("final validation bits/byte: " + "  ".join(f"{k} {v:.3f}" for k, v in bpb.items()))


def _run(fn, args) -> int:
    """Run, then report on rank 0 alone (under torchrun every rank runs this command)."""
    from plasticlm import dist

    try:
        summary = fn()
        if dist.is_main():
            _report(summary, args.json)
    finally:
        dist.teardown()
    return 0


def run_train(args) -> int:
    from plasticlm.train import train

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.config, cfg)
    return _run(lambda: train(cfg, run_dir, quiet=args.quiet or args.json, overwrite=args.overwrite), args)


def run_resume(args) -> int:
    from plasticlm.train import resume

    require_run_dir(args.run_dir)
    return _run(lambda: resume(args.run_dir, quiet=args.quiet or args.json, overrides=args.overrides), args)


def run_bench(args) -> int:
    from plasticlm import dist
    from plasticlm.bench import bench_presets

    try:
        rows = bench_presets(args.presets.split(","), vocab_size=args.vocab_size, seq_len=args.seq_len,
                             batch_size=args.batch_size, steps=args.steps, device=args.device, dtype=args.dtype,
                             compile=args.compile, threads=args.threads, strategy=args.strategy)
        main = dist.is_main()  # before the group is gone: rank 0 alone prints
    finally:
        dist.teardown()
    if not main:
        return 0
    if args.json:
        print_json(rows)
    else:
        print(f"MFU against the {rows[0]['peak_source']}" if rows else "no presets")
        print_table(rows, ["preset", "non_embedding_params", "device", "dtype", "compile", "strategy", "world_size",
                           "batch", "ms_per_step", "tokens_per_s", "mfu", "peak_mem_mb"])
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model on the continual (or stationary/permuted) language stream",
        description="Train one preset on the configured stream (AdamW, task-boundary optimizer reset and "
        "LR re-warm-up, per-task evaluation, checkpoints at task boundaries). Exit 3 on a non-finite loss.",
    )
    p.add_argument("config", help="TOML config, e.g. configs/demo.toml")
    add_set(p)
    p.add_argument("--run-dir", help="run directory (default: runs/<config>-<preset>-<stream>-s<seed>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --run-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(p)
    p.set_defaults(func=run_train)

    r = sub.add_parser("resume", help="continue an interrupted run exactly from its latest checkpoint")
    r.add_argument("run_dir", help="a run directory written by `plasticlm train`")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="dist.KEY=VALUE",
                   help="change how the run is executed, e.g. --set dist.strategy=fsdp under torchrun (dist.* only)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(r)
    r.set_defaults(func=run_resume)

    b = sub.add_parser("bench", help="training throughput, time per step, MFU and peak memory per preset",
                       description="Times the training step (step.train_step) on random tokens (no data "
                       "needed); MFU against a stated peak (CUDA: the data-sheet bf16 peak of a known GPU, "
                       "else a measured matmul).")
    b.add_argument("--presets", default="3K,25K,85K,200K,390K,670K", help="comma-separated preset names")
    b.add_argument("--vocab-size", type=int, default=1024)
    b.add_argument("--seq-len", type=int, default=128)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    b.add_argument("--device", default="auto", help="cpu, cuda or auto")
    b.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="as train.dtype: auto = bfloat16 on CUDA, float32 on CPU")
    b.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="as train.compile: auto = on for CUDA, off on CPU")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    b.add_argument("--strategy", default="none", choices=["none", "ddp", "fsdp"],
                   help="as dist.strategy: ddp or fsdp time the wrapped model under torchrun "
                   "(torchrun --nproc_per_node=N -m plasticlm bench --strategy ddp); the batch is global")
    add_json(b)
    b.set_defaults(func=run_bench)
