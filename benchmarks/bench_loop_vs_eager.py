"""The training loop against a straightforward eager PyTorch step of the same model.

    nice -n 5 python benchmarks/bench_loop_vs_eager.py [--presets 3K,25K,85K,200K,390K,670K]
        [--eager-in process|same] [--batch 16] [--seq 128] [--threads 1] [--steps 5] [--blocks 15]
        [--set train.malloc=system ...]

For each preset both sides train the same GPT (``plasticlm.model``, same config and init) on the same
random tokens:

- loop:  ``Trainer.train_step`` then ``on_step_end``, as ``Trainer.fit`` runs them: the LR schedule,
  the stream's next batch, the components' hooks (train metrics, progress, ...), forward/backward
  (``plasticlm.step``), clipping, the non-finite check and the project's optimizer step, in a process
  set up as ``plasticlm train`` sets it up (``plasticlm.cpu.configure_cpu``), with the run's default
  configuration (``--set`` overrides it, e.g. ``--set optim.impl=forloop`` to time the old optimizer
  path, ``--set train.malloc=system`` to leave glibc's allocator at its defaults);
- eager: the textbook step, written here, not imported from the package:
  ``loss = F.cross_entropy(model(x).view(-1, V), y.view(-1)); loss.backward();
  clip_grad_norm_(..., 1.0); opt.step(); opt.zero_grad()`` with a plain
  ``torch.optim.AdamW(model.parameters(), lr=1e-3)`` (torch's defaults otherwise), on the textbook
  model: the same GPT and weights with ``F.scaled_dot_product_attention`` and ``nn.GELU``
  (``model.fused_attention = false``, ``model.fused_gelu = false``). ``--eager-loss model`` takes the
  loss from the model instead (``model(x, y)``: plasticlm's loss kernel, ``model.fused_loss``) and
  ``--eager-kernels model`` its attention and GeLU (plasticlm's CPU kernels); with both, only the
  step's own work (optimizer, clipping, loop) is left in the ratio.

Where the eager step runs (``--eager-in``):

- ``process`` (default): in a plain Python process of its own, started by this one, that imports torch
  and the model and nothing else of plasticlm, as a user's training script would (denormals flushed
  and the same thread count, as in the loop's process). The two processes take turns: this one sends
  "run a block", waits for the timings, runs its own block, and so on, so only one computes at a time
  and load from elsewhere falls on both alike. This measures what ``plasticlm train`` gains over such a
  script, including its process settings (the allocator, README "Step speed").
- ``same``: in this process, after the loop's. Process-wide settings (the allocator) then apply to
  both sides, and the ratio measures the step's own code only.

Both sides alternate in blocks of ``--steps`` steps (A B A B ...; after a warm-up) and the median
time per step of each side is reported, in wall time and in the process's CPU time
(``time.process_time``: on one thread the work done, without the time slices other processes took),
with the page faults per step (minor faults: memory the C library handed back to the OS and faults in
again). A third side, ``body``, times the loop's model without its loss head (embeddings, blocks and
ln_f, forward and backward, with the loop's kernels, in this process); ceiling = eager / body is
the most the ratio could be if the rest of the loop's step (loss head, optimizer, clipping,
bookkeeping) cost nothing.
ratio = loop tokens/s / eager tokens/s (> 1: the loop is faster than the eager step); its spread
within a run is the 25-75% range of the ratio over pairs of adjacent blocks (eager, then loop).
MFU = ``model.flops_per_token`` x loop tokens/s over a measured float32 matmul peak on the same
threads (``bench.cpu_matmul_peak``). Prints numbers, never fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
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


def timed(step, n: int) -> dict[str, float]:
    """Run ``step(i)`` n times; wall and CPU seconds and minor page faults, per step."""
    r0, t0, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter(), time.process_time()
    for i in range(n):
        step(i)
    return {"wall": (time.perf_counter() - t0) / n, "cpu": (time.process_time() - c0) / n,
            "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / n}


class EagerStep:
    """The textbook step (module docstring) of a GPT built from ``gpt_config`` with torch's seed 0.

    ``loss = "body"`` times only the model without its loss head: embeddings, blocks and ln_f, forward
    and backward (a fixed gradient on ln_f's output; no loss head, optimizer or clipping). Built from
    the loop's config, eager / body is the ratio's ceiling: what the loop would reach if everything
    else in its step cost nothing."""

    def __init__(self, gpt_config: dict, batch: int, seq: int, loss: str):
        from plasticlm.model import GPT, GPTConfig

        torch.manual_seed(0)
        self.model = GPT(GPTConfig(**gpt_config))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.vocab, self.loss = gpt_config["vocab_size"], loss
        tokens = fake_data(self.vocab).train["en"][: batch * (seq + 1) * 8]
        self.x_all = torch.from_numpy(tokens.astype(np.int64)).view(8, batch, seq + 1)
        self.pos = torch.arange(seq)
        self.grad = torch.randn(batch, seq, gpt_config["d_model"]) * 1e-3
        for i in range(3):  # warm-up
            self.step(i)

    def step(self, i: int) -> None:
        m, xb = self.model, self.x_all[i % 8]
        if self.loss == "body":
            x = m.wte(xb[:, :-1]) + m.wpe(self.pos)
            for block in m.blocks:
                x = block(x)
            m.ln_f(x).backward(self.grad)
            m.zero_grad(set_to_none=True)
            return
        if self.loss == "model":
            loss = m(xb[:, :-1], xb[:, 1:])
        else:
            loss = F.cross_entropy(m(xb[:, :-1]).view(-1, self.vocab), xb[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad()

    def block(self, n: int) -> dict[str, float]:
        return timed(self.step, n)


class EagerProcess:
    """``EagerStep`` in a plain Python process of its own (``--eager-worker``), one block at a time."""

    def __init__(self, spec: dict):
        self.proc = subprocess.Popen([sys.executable, __file__, "--eager-worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self._ask(spec)  # builds the model and warms up; answers when ready

    def _ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the eager worker exited (status {self.proc.wait()})")
        return json.loads(line)

    def block(self, n: int) -> dict[str, float]:
        return self._ask({"steps": n})

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def eager_worker() -> None:
    """The eager side's process: imports torch and the model only; answers one JSON line per request."""
    spec = json.loads(sys.stdin.readline())
    torch.set_num_threads(spec["threads"])
    torch.set_flush_denormal(True)
    eager = EagerStep(spec["gpt_config"], spec["batch"], spec["seq"], spec["loss"])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(eager.block(json.loads(line)["steps"])), flush=True)


def bench(preset: str, args: argparse.Namespace, run_dir: str) -> dict:
    from plasticlm.config import load_config
    from plasticlm.model import flops_per_token
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

    def loop(_i: int = 0) -> None:
        loss = trainer.train_step()
        trainer.components.fire("on_step_end", loss)

    loop()  # the first step (compiles when train.compile is on)
    first_step_s = time.perf_counter() - t0
    for _ in range(3):  # warm-up
        loop()

    loop_config = dataclasses.asdict(trainer.gpt_config)
    eager_config = dict(loop_config)
    for key in ("fused_attention", "fused_gelu"):  # textbook: SDPA and nn.GELU
        eager_config[key] = args.eager_kernels == "model" and loop_config[key]
    spec = {"gpt_config": eager_config, "batch": batch, "seq": seq,
            "loss": args.eager_loss, "threads": args.threads}
    eager_args = (spec["gpt_config"], batch, seq)
    eager = EagerProcess(spec) if args.eager_in == "process" else EagerStep(*eager_args, args.eager_loss)
    body = EagerStep(loop_config, batch, seq, "body")  # the loop's blocks (its kernels), in its process
    runs: dict[str, list[dict[str, float]]] = {"loop": [], "eager": [], "body": []}
    try:
        for _ in range(args.blocks):
            runs["eager"].append(eager.block(args.steps))
            runs["loop"].append(timed(loop, args.steps))
            runs["body"].append(body.block(args.steps))
    finally:
        if isinstance(eager, EagerProcess):
            eager.close()

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    loop_s, eager_s = med("loop", "wall"), med("eager", "wall")
    loop_c, eager_c = med("loop", "cpu"), med("eager", "cpu")
    body_s = med("body", "wall")
    # each eager block against the loop block that ran right after it: drift in the machine's speed over
    # a run (seen as 54-82 GFLOP/s of matmul peak between runs) moves both alike
    pairs = sorted(e["wall"] / lp["wall"] for e, lp in zip(runs["eager"], runs["loop"]))
    q1, q3 = np.percentile(pairs, [25, 75])
    return {"preset": preset, "batch": f"{batch}x{seq}", "loop_ms": round(loop_s * 1e3, 3),
            "eager_ms": round(eager_s * 1e3, 3), "ratio": round(eager_s / loop_s, 3),
            "ratio_pairs_q1": round(float(q1), 3), "ratio_pairs_q3": round(float(q3), 3),
            "loop_cpu_ms": round(loop_c * 1e3, 3), "eager_cpu_ms": round(eager_c * 1e3, 3),
            "ratio_cpu": round(eager_c / loop_c, 3),
            "body_ms": round(body_s * 1e3, 3), "ceiling": round(eager_s / body_s, 3),
            "loop_faults_per_step": round(med("loop", "faults")),
            "eager_faults_per_step": round(med("eager", "faults")),
            "loop_tokens_per_s": round(batch * seq / loop_s), "eager_tokens_per_s": round(batch * seq / eager_s),
            "first_step_s": round(first_step_s, 2), "flops_per_token": flops_per_token(trainer.gpt_config)}


def main() -> None:
    if sys.argv[1:] == ["--eager-worker"]:
        return eager_worker()
    from plasticlm.bench import cpu_matmul_peak
    from plasticlm.presets import MICRO_PRESETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(MICRO_PRESETS), help="comma-separated (default: the micro ladder)")
    p.add_argument("--eager-in", choices=["process", "same"], default="process",
                   help="the eager step in a plain process of its own (a user's script), or in this process "
                        "(where the loop's process settings apply to it too)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="steps per timed block")
    p.add_argument("--blocks", type=int, default=15, help="alternating timed blocks per side")
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (train.threads)")
    p.add_argument("--eager-loss", choices=["textbook", "model"], default="textbook",
                   help="eager side's loss: F.cross_entropy on the logits, or the model's own (model(x, y))")
    p.add_argument("--eager-kernels", choices=["textbook", "model"], default="textbook",
                   help="eager side's attention and GeLU: F.scaled_dot_product_attention and nn.GELU, or the "
                        "model's own (model.fused_attention, model.fused_gelu: plasticlm's CPU kernels)")
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
                          f"loop overrides: {args.set or 'none'}; eager loss: {args.eager_loss}; "
                          f"eager kernels: {args.eager_kernels}; "
                          f"eager step in: {'its own process' if args.eager_in == 'process' else 'this process'}")
                    print(f"{'preset':>7} {'batch':>8} {'loop ms':>9} {'eager ms':>9} {'ratio':>6} {'pairs IQR':>11} "
                          f"{'loop cpu ms':>11} {'eager cpu ms':>12} {'cpu ratio':>9} {'body ms':>8} {'ceiling':>7} "
                          f"{'faults/step':>13} "
                          f"{'loop tok/s':>11} {'MFU':>6} {'1st step s':>10}")
                faults = f"{r['loop_faults_per_step']}/{r['eager_faults_per_step']}"
                print(f"{preset:>7} {r['batch']:>8} {r['loop_ms']:9.2f} {r['eager_ms']:9.2f} {r['ratio']:6.3f} "
                      f"{r['ratio_pairs_q1']:5.2f}-{r['ratio_pairs_q3']:<5.2f} "
                      f"{r['loop_cpu_ms']:11.2f} {r['eager_cpu_ms']:12.2f} {r['ratio_cpu']:9.3f} {r['body_ms']:8.2f} "
                      f"{r['ceiling']:7.3f} {faults:>13} "
                      f"{r['loop_tokens_per_s']:11.0f} {r['mfu']:6.1%} {r['first_step_s']:10.2f}", flush=True)
    if args.json:
        print(json.dumps({"peak_flops": peak, "threads": args.threads, "overrides": args.set,
                          "eager_loss": args.eager_loss, "eager_kernels": args.eager_kernels,
                          "eager_in": args.eager_in, "rows": rows}))
    else:
        print("ratio = loop tokens/s / eager tokens/s (> 1: the loop is faster than the eager step), from "
              "median wall time per step; pairs IQR: the 25-75% range of the ratio over pairs of adjacent "
              "blocks; cpu ratio: the same from the process's CPU time, which time slices "
              "lost to other processes do not inflate; body ms: the loop's model without its loss head "
              "(embeddings, blocks, ln_f; forward and backward); ceiling = eager ms / body ms, the most the "
              "ratio could be; faults/step: "
              "minor page faults per step, loop/eager")


if __name__ == "__main__":
    main()
