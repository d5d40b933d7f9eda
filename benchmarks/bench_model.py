"""Training-step throughput of the micro presets on this machine (prints numbers, never fails).

    python benchmarks/bench_model.py [--vocab 1024] [--seq-len 128] [--batch 32] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from plasticlm.model import GPT, MICRO_PRESETS, configure_cpu, from_preset, non_embedding_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--presets", default=",".join(MICRO_PRESETS))
    args = ap.parse_args()
    configure_cpu()
    print(f"threads={torch.get_num_threads()} vocab={args.vocab} batch={args.batch}x{args.seq_len}")
    for name in args.presets.split(","):
        torch.manual_seed(0)
        m = GPT(from_preset(name, vocab_size=args.vocab, seq_len=args.seq_len))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        x = torch.randint(0, args.vocab, (args.batch, args.seq_len))
        for i in range(args.steps + 2):
            if i == 2:
                t0 = time.perf_counter()
            loss = m(x, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        dt = (time.perf_counter() - t0) / args.steps
        tok_s = args.batch * args.seq_len / dt
        print(f"{name:>6}  non_emb={non_embedding_params(m.config):>9,}  step={dt * 1e3:7.1f} ms  {tok_s:10,.0f} tok/s")


if __name__ == "__main__":
    main()
