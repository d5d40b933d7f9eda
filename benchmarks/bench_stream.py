"""Batch serving of the language stream vs training consumption (prints numbers, never fails).

    python benchmarks/bench_stream.py [--source debian-docs|synthetic] [--batch 32] [--seq-len 128]

Serves batches from the real token shards (continual, stationary, permuted) and compares the
tokens/s with what one training step of each micro preset consumes on this machine. The data path
must never be the bottleneck: the target is >= 20x the smallest preset's training speed.
"""

from __future__ import annotations

import argparse
import time

from plasticlm.bench import bench_presets
from plasticlm.config import load_config
from plasticlm.data.prepare import prepare_data
from plasticlm.data.stream import LanguageStream


def serve_rate(cfg, data, kind: str, batch: int, seq_len: int, seconds: float = 2.0) -> float:
    scfg = load_config(None, [f"stream.kind={kind}", "stream.tokens_per_task=409600000", "stream.cycles=1"]).stream
    stream = LanguageStream(scfg, data.train, seq_len, batch, data.vocab_size)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        stream.next_batch()
        n += 1
    return n * batch * seq_len / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="debian-docs")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--presets", default="25K,85K,200K,390K,670K")
    args = ap.parse_args()
    cfg = load_config(None, [f"data.source={args.source}", f"model.seq_len={args.seq_len}"])
    data = prepare_data(cfg, progress=False)
    rates = {kind: serve_rate(cfg, data, kind, args.batch, args.seq_len) for kind in
             ["continual", "stationary", "permuted"]}
    train = {r["preset"]: r["tokens_per_s"] for r in bench_presets(
        args.presets.split(","), vocab_size=data.vocab_size, seq_len=args.seq_len, batch_size=args.batch, steps=5,
        device="cpu")}
    print(f"source={args.source} vocab={data.vocab_size} batch={args.batch}x{args.seq_len}")
    for kind, rate in rates.items():
        print(f"serving {kind:>10}: {rate:12,.0f} tokens/s")
    slowest_serving = min(rates.values())
    for preset, tok_s in train.items():
        print(f"training {preset:>6}: {tok_s:12,.0f} tokens/s   serving / training = {slowest_serving / tok_s:7.1f}x")


if __name__ == "__main__":
    main()
