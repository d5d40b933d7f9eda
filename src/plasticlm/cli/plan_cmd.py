"""`plasticlm plan CONFIG`: tokens, steps, probes, FLOPs and GPU-hours of a study before running it, and
the data it needs (tokens per language, disk, CPU-hours, reuse)."""

from __future__ import annotations

from plasticlm.cli._common import add_json, add_set, load_config, print_json, print_table
from plasticlm.data.needs import TOKENIZE_TOKENS_PER_CPU_S, format_reuse
from plasticlm.units import GPU_PEAK_TFLOPS, num, si


def _bytes(n: float | None) -> str:
    """Decimal bytes: 3.32 TB, 404 GB."""
    if n is None:
        return "-"
    for div, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} B"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.2f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def _print_cpu(est) -> None:
    print(f"\nCPU estimate on this machine ({est.parallel} run(s) at once, "
          f"{next(iter(est.rates.values())).threads} thread(s) each; measured real training steps):")
    print_table([{"preset": r.preset, "ms/step": f"{1e3 * r.step_s:.1f}",
                  "eval tokens/s": f"{r.eval_tokens_per_s:,.0f}"} for r in est.rates.values()],
                ["preset", "ms/step", "eval tokens/s"])
    method = ["method"] if any(r.get("method") for r in est.runs) else []
    print_table([{"preset": r["preset"], "seed": r["seed"], "stream": r["stream"], "method": r.get("method"),
                  "train": _hours(r["train_s"]), "probes": _hours(r["probe_s"]), "eval": _hours(r["eval_s"]),
                  "total": _hours(r["total_s"])}
                 for r in est.runs], ["preset", "seed", "stream", *method, "train", "probes", "eval", "total"])
    core = sum(r["total_s"] for r in est.runs)
    print(f"CPU total: {_hours(core)} of compute, about {_hours(est.wall_s)} of wall time with {est.parallel} "
          "at once (an estimate: other load on the machine slows it)")


def run(args) -> int:
    from plasticlm.cpu_plan import estimate_cpu
    from plasticlm.plan import plan_data, plan_study

    cfg = load_config(args.file, args.overrides)
    plan = plan_study(cfg, args.gpu, args.mfu, args.peak_tflops)
    data = plan_data(cfg, args.tokenize_rate)
    est = None
    if args.cpu:
        est = estimate_cpu(cfg, plan, args.parallel)
    if args.json:
        doc = plan.to_json()
        doc["config"] = args.file
        doc["data"] = data.to_json()
        if est is not None:
            doc["cpu"] = est.to_json()
        print_json(doc)
        return 0
    rows = [{
        "preset": r.preset, "seed": r.seed, "stream": r.stream, "method": r.method,
        "params": si(r.non_embedding_params),
        "tokens": si(r.tokens), "steps": r.steps, "probes": r.probes + r.scratch_probes,
        "probe_tokens": si(r.probe_tokens), "FLOPs": f"{r.total_flops:.3g}", "gpu_hours": f"{r.gpu_hours:,.1f}",
    } for r in plan.runs]
    print(f"{args.file}: {len(plan.runs)} runs on {plan.gpu} ({plan.peak_tflops:g} TFLOP/s bf16 dense) "
          f"at MFU {plan.mfu:g}")
    method = ["method"] if any(r.method for r in plan.runs) else []
    print_table(rows, ["preset", "seed", "stream", *method, "params", "tokens", "steps", "probes", "probe_tokens",
                       "FLOPs", "gpu_hours"])
    tot = plan.totals()
    print(f"total: {si(tot['tokens'])} training tokens, {tot['probes'] + tot['scratch_probes']} probes "
          f"({si(tot['probe_tokens'])} probe tokens), {tot['total_flops']:.3g} FLOPs "
          f"(train {tot['train_flops']:.3g}, probes {tot['probe_flops']:.3g}, eval {tot['eval_flops']:.3g}"
          + (f", methods {tot['method_flops']:.3g}" if tot["method_flops"] else "") + "), "
          f"{tot['gpu_hours']:,.0f} GPU-hours = {tot['gpu_days']:,.1f} GPU-days")
    print(f"\ndata to prepare ({cfg.data.source}; '-' = every document, known once built):")
    print_table([{"lang": r["lang"], "train_tokens": si(r["train_tokens"]), "val_tokens": si(r["val_tokens"]),
                  "a run reads": si(r["need_tokens"]), "reuse": num(r["reuse"], ".2f"),
                  "disk": _bytes(r["disk_bytes"])} for r in data.languages],
                ["lang", "train_tokens", "val_tokens", "a run reads", "reuse", "disk"])
    if data.tokens is not None:
        print(f"data total: {si(data.tokens)} tokens, {_bytes(data.disk_bytes)} of token shards (peak "
              f"{_bytes(data.peak_disk_bytes)} while a language is merged), {data.cpu_hours:,.0f} CPU-hours to "
              f"tokenize at {si(data.tokens_per_cpu_s)} tokens/s per core")
    unknown = [r["lang"] for r in data.languages if r["train_tokens"] is None]
    known = format_reuse(data.reuse) + (f"; unknown for {', '.join(unknown)} until built (a run checks when it "
                                        "starts)" if unknown else "")
    print(f"data reuse (stream.allow_reuse = {str(cfg.stream.allow_reuse).lower()}): {known}")
    if est is not None:
        _print_cpu(est)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "plan", help="compute plan of a study: tokens, steps, probes, FLOPs, GPU-hours, data to prepare",
        description="From the config alone: per run (preset x seed, with the stationary twins of "
        "sweep.stationary_presets) the training tokens, steps, probes (with the scratch baseline), probe tokens, "
        "FLOPs (flops_per_token x tokens; evaluation at 1/3) and GPU-hours at the given MFU; then the data: "
        "tokens to prepare per language, shard disk, CPU-hours to tokenize, and data reuse (an error unless "
        "stream.allow_reuse). Formulas: src/plasticlm/plan.py.",
    )
    p.add_argument("file", help="a TOML config, e.g. configs/paper/continual.toml")
    p.add_argument("--gpu", default="h100", type=str.lower, choices=sorted(GPU_PEAK_TFLOPS),
                   help="GPU for the peak bf16 dense throughput (default h100: 989 TFLOP/s)")
    p.add_argument("--peak-tflops", type=float, default=None, metavar="X",
                   help="peak TFLOP/s per GPU, overriding the --gpu table")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (default 0.4)")
    p.add_argument("--cpu", action="store_true",
                   help="also estimate the wall time on this machine's CPU from a short measured benchmark of "
                   "each preset (real training steps and evaluation; a few seconds per preset)")
    p.add_argument("--parallel", type=int, default=None,
                   help="--cpu: runs at once, each with cpu_count/parallel threads (default: sweep.parallel)")
    p.add_argument("--tokenize-rate", type=float, default=TOKENIZE_TOKENS_PER_CPU_S, metavar="TOKENS_PER_S",
                   help=f"tokens/s per CPU core of the shard build (default {TOKENIZE_TOKENS_PER_CPU_S:.3g}, measured "
                   "with the 1,024-token BPE: benchmarks/bench_shards.py)")
    add_set(p)
    add_json(p)
    p.set_defaults(func=run)
