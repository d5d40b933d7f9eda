"""`plasticlm plan CONFIG`: tokens, steps, probes, FLOPs and GPU-hours of a study before running it."""

from __future__ import annotations

from plasticlm.cli._common import add_json, add_set, print_json, print_table
from plasticlm.config import load_config
from plasticlm.plan import GPU_PEAK_TFLOPS, plan_study
from plasticlm.units import si


def run(args) -> int:
    cfg = load_config(args.file, args.overrides)
    plan = plan_study(cfg, args.gpu, args.mfu, args.peak_tflops)
    if args.json:
        doc = plan.to_json()
        doc["config"] = args.file
        print_json(doc)
        return 0
    rows = [{
        "preset": r.preset, "seed": r.seed, "stream": r.stream, "params": si(r.non_embedding_params),
        "tokens": si(r.tokens), "steps": r.steps, "probes": r.probes + r.scratch_probes,
        "probe_tokens": si(r.probe_tokens), "FLOPs": f"{r.total_flops:.3g}", "gpu_hours": f"{r.gpu_hours:,.1f}",
    } for r in plan.runs]
    print(f"{args.file}: {len(plan.runs)} runs on {plan.gpu} ({plan.peak_tflops:g} TFLOP/s bf16 dense) "
          f"at MFU {plan.mfu:g}")
    print_table(rows, ["preset", "seed", "stream", "params", "tokens", "steps", "probes", "probe_tokens",
                       "FLOPs", "gpu_hours"])
    tot = plan.totals()
    print(f"total: {si(tot['tokens'])} training tokens, {tot['probes'] + tot['scratch_probes']} probes "
          f"({si(tot['probe_tokens'])} probe tokens), {tot['total_flops']:.3g} FLOPs "
          f"(train {tot['train_flops']:.3g}, probes {tot['probe_flops']:.3g}, eval {tot['eval_flops']:.3g}), "
          f"{tot['gpu_hours']:,.0f} GPU-hours = {tot['gpu_days']:,.1f} GPU-days")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "plan", help="compute plan of a study: tokens, steps, probes, FLOPs, GPU-hours",
        description="From the config alone: per run (preset x seed, x2 with sweep.stationary) the training "
        "tokens, steps, probes (with the scratch baseline), probe tokens, FLOPs (flops_per_token x tokens; "
        "evaluation at 1/3) and GPU-hours at the given MFU. Formulas: src/plasticlm/plan.py.",
    )
    p.add_argument("file", help="a TOML config, e.g. configs/paper/continual.toml")
    p.add_argument("--gpu", default="h100", type=str.lower, choices=sorted(GPU_PEAK_TFLOPS),
                   help="GPU for the peak bf16 dense throughput (default h100: 989 TFLOP/s)")
    p.add_argument("--peak-tflops", type=float, default=None, metavar="X",
                   help="peak TFLOP/s per GPU, overriding the --gpu table")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (default 0.4)")
    add_set(p)
    add_json(p)
    p.set_defaults(func=run)
