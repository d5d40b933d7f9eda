"""The training loop against a straightforward eager PyTorch step of the same model, in one process.

    nice -n 5 python benchmarks/bench_loop_vs_eager.py [--presets 3K,25K,85K,200K] [--batch 16] [--seq 128]
        [--threads 1] [--steps 5] [--blocks 15] [--set train.compile=on ...]

For each preset both sides train the same GPT (``plasticlm.model``) on the same random tokens:

- loop:  ``Trainer.train_step`` then ``on_step_end``, as ``Trainer.fit`` runs them: the LR schedule,
  the stream's next batch, the components' hooks (train metrics, progress, ...), forward/backward
  (``plasticlm.step``), clipping, the non-finite check and the project's optimizer step, with the
  run's default configuration (``--set`` overrides it, e.g. ``--set optim.impl=forloop`` to time the
  old optimizer path);
- eager: the textbook step, written here, not imported from the package:
  ``loss = F.cross_entropy(model(x).view(-1, V), y.view(-1)); loss.backward();
  clip_grad_norm_(..., 1.0); opt.step(); opt.zero_grad()`` with a plain
  ``torch.optim.AdamW(model.parameters(), lr=1e-3)`` (torch's defaults otherwise). ``--eager-loss
  model`` takes the loss from the model instead (``model(x, y)``: plasticlm's loss kernel,
  ``model.fused_loss``), which leaves only the step's own work (optimizer, clipping, loop) in the
  ratio.

The two sides alternate in blocks of ``--steps`` steps (A B A B ...; after a warm-up) so that load
from other processes on the machine falls on both alike, and the median time per step of each side
is reported, in wall time and in the process's CPU time (``time.process_time``: on one thread the
work done, without the time slices other processes took). ratio = loop tokens/s / eager tokens/s
(> 1: the loop is faster than the eager step).
MFU = ``model.flops_per_token`` x loop tokens/s over a measured float32 matmul peak on the same
threads (``bench.cpu_matmul_peak``). Prints numbers, never fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F


def fake_data(vocab: int, n: int = 400_000) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    langs = ["en", "vi"]
    tokens = {lang: rng.integers(0, vocab, n).astype(np.uint16) for lang in langs}
    val = {lang: rng.integers(0, vocab, 20_000).astype(np.uint16) for lang in langs}
    return SimpleNamespace(train=tokens, val=val, bytes_per_token={k: 2.0 for k in langs}, vocab_size=vocab)


def bench(preset: str, args: argparse.Namespace, run_dir: str) -> dict:
    from plasticlm.config import load_config
    from plasticlm.model import GPT, flops_per_token
    from plasticlm.train import Trainer

    batch, seq = args.batch, args.seq
    cfg = load_config(None, [f"model.preset={preset}", f"model.seq_len={seq}", f"train.batch_size={batch}",
                             f"train.threads={args.threads}", "stream.languages=[en]",
                             f"stream.tokens_per_task={batch * seq * 100_000}", "stream.cycles=1",
                             "stream.allow_reuse=true", "probe.language=vi", "probe.after_languages=[]",
                             "optim.lr=1e-3", "eval.sequences=2",
                             *args.set])
    data = fake_data(args.vocab)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, f"{run_dir}/{preset}", data, quiet=True)
    trainer.metrics.enabled = False  # no run directory: the rows are built, not written

    def loop() -> None:
        loss = trainer.train_step()
        trainer.components.fire("on_step_end", loss)

    loop()  # the first step (compiles when train.compile is on)
    first_step_s = time.perf_counter() - t0

    torch.manual_seed(0)
    model = GPT(trainer.gpt_config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x_all = torch.from_numpy(data.train["en"][: batch * (seq + 1) * 8].astype(np.int64)).view(8, batch, seq + 1)

    def eager(i: int) -> None:
        xb = x_all[i % 8]
        if args.eager_loss == "model":
            loss = model(xb[:, :-1], xb[:, 1:])
        else:
            loss = F.cross_entropy(model(xb[:, :-1]).view(-1, args.vocab), xb[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    for i in range(3):  # warm-up
        eager(i)
        loop()
    wall: dict[str, list[float]] = {"loop": [], "eager": []}
    cpu: dict[str, list[float]] = {"loop": [], "eager": []}
    for _ in range(args.blocks):
        for name in ("eager", "loop"):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(args.steps):
                eager(i) if name == "eager" else loop()
            wall[name].append((time.perf_counter() - t0) / args.steps)
            cpu[name].append((time.process_time() - c0) / args.steps)
    loop_s, eager_s = statistics.median(wall["loop"]), statistics.median(wall["eager"])
    loop_c, eager_c = statistics.median(cpu["loop"]), statistics.median(cpu["eager"])
    return {"preset": preset, "batch": f"{batch}x{seq}", "loop_ms": round(loop_s * 1e3, 3),
            "eager_ms": round(eager_s * 1e3, 3), "ratio": round(eager_s / loop_s, 3),
            "loop_cpu_ms": round(loop_c * 1e3, 3), "eager_cpu_ms": round(eager_c * 1e3, 3),
            "ratio_cpu": round(eager_c / loop_c, 3),
            "loop_tokens_per_s": round(batch * seq / loop_s), "eager_tokens_per_s": round(batch * seq / eager_s),
            "first_step_s": round(first_step_s, 2), "flops_per_token": flops_per_token(trainer.gpt_config)}


def main() -> None:
    from plasticlm.bench import cpu_matmul_peak

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="3K,25K,85K,200K")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="steps per timed block")
    p.add_argument("--blocks", type=int, default=15, help="alternating timed blocks per side")
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (train.threads)")
    p.add_argument("--eager-loss", choices=["textbook", "model"], default="textbook",
                   help="eager side's loss: F.cross_entropy on the logits, or the model's own (model(x, y))")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for the loop")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    peak = cpu_matmul_peak()
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        for preset in args.presets.split(","):
            r = bench(preset, args, run_dir)
            r["mfu"] = round(r["flops_per_token"] * r["loop_tokens_per_s"] / peak, 4)
            rows.append(r)
            if not args.json:
                if len(rows) == 1:
                    print(f"CPU float32 matmul peak: {peak / 1e9:.1f} GFLOP/s on {args.threads} thread(s); "
                          f"loop overrides: {args.set or 'none'}; eager loss: {args.eager_loss}")
                    print(f"{'preset':>7} {'batch':>8} {'loop ms':>9} {'eager ms':>9} {'ratio':>6} "
                          f"{'loop cpu ms':>11} {'eager cpu ms':>12} {'cpu ratio':>9} {'loop tok/s':>11} {'MFU':>6} "
                          f"{'1st step s':>10}")
                print(f"{preset:>7} {r['batch']:>8} {r['loop_ms']:9.2f} {r['eager_ms']:9.2f} {r['ratio']:6.3f} "
                      f"{r['loop_cpu_ms']:11.2f} {r['eager_cpu_ms']:12.2f} {r['ratio_cpu']:9.3f} "
                      f"{r['loop_tokens_per_s']:11.0f} {r['mfu']:6.1%} {r['first_step_s']:10.2f}", flush=True)
    if args.json:
        print(json.dumps({"peak_flops": peak, "threads": args.threads, "overrides": args.set,
                          "eager_loss": args.eager_loss, "rows": rows}))
    else:
        print("ratio = loop tokens/s / eager tokens/s (> 1: the loop is faster than the eager step), from "
              "median wall time per step; cpu ratio: the same from the process's CPU time, which time slices "
              "lost to other processes do not inflate")


if __name__ == "__main__":
    main()
