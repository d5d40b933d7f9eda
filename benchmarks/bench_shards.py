"""Shard build at scale: peak memory across all processes against corpus size, and throughput.

    python benchmarks/bench_shards.py [--mb 40] [--factor 3] [--langs 2] [--workers 2] [--vocab 1024]

Writes local .jsonl corpora of ``--langs`` languages x ``--mb`` MB and x ``--mb * --factor`` MB
(generated text, ~1 KB documents), trains one ``--vocab`` byte-level BPE on a sample, then runs
``plasticlm corpus build --tokens --source local`` on each corpus in a fresh cache, polling the
resident memory of the whole process tree (the command, datatrove's executor and its workers) every
50 ms. Prints tokens, seconds, tokens/s and the peak of the summed RSS for both sizes, and the
difference: a streaming build's peak must not grow with the corpus (README, "Data at scale").
Prints numbers, never fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_corpus(root: Path, langs: int, mb: float, seed: int) -> None:
    for k in range(langs):
        rng = np.random.default_rng([seed, k])  # the same words for every corpus size: one tokenizer fits all
        letters = list("abcdefghijklmnopqrstuvwxyz" if k % 2 == 0 else "aeiouybcdfghklmnprstvz\u00e9\u00e8\u00e0")
        words = ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(4000)]
        d = root / f"l{k}"
        d.mkdir(parents=True)
        written, target = 0, int(mb * 1e6)
        with open(d / "part.jsonl", "w", encoding="utf-8") as f:
            while written < target:
                idx = rng.zipf(1.3, size=(200, 170)) % len(words)
                for row in idx:
                    line = json.dumps({"text": " ".join(words[i] for i in row) + "."}, ensure_ascii=False) + "\n"
                    f.write(line)
                    written += len(line.encode())


def tree_rss(pid: int) -> int:
    """Summed VmRSS (bytes) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def build(corpus: Path, home: Path, tokenizer: Path, langs: int, workers: int) -> dict:
    cmd = [sys.executable, "-m", "plasticlm", "corpus", "build", "--tokens", "--quiet", "--json", "--source", "local",
           "--langs", ",".join(f"l{k}" for k in range(langs)), "--set", f"data.local_dir={corpus}",
           "--set", f"data.home={home}", "--set", f"data.tokenizer={tokenizer}", "--set", f"data.workers={workers}",
           "--set", f"data.tasks={workers}", "--set", "stream.languages=[l0]", "--set", "probe.language=l1",
           "--set", "probe.after_languages=[]"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(err[-2000:])
    doc = json.loads(out)
    tokens = sum(r["train_tokens"] + r["val_tokens"] for r in doc["languages"])
    mb = sum(r["bytes"] for r in doc["languages"]) / 1e6
    return {"mb": mb, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=40.0, help="MB of text per language in the small corpus")
    ap.add_argument("--factor", type=float, default=3.0, help="the large corpus is this many times larger")
    ap.add_argument("--langs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    args = ap.parse_args()
    from plasticlm.data.tokenizer import train_bpe

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, mb in (("small", args.mb), ("large", args.mb * args.factor)):
            make_corpus(root / name, args.langs, mb, seed=0)
        sample = [json.loads(line)["text"] for line in (root / "small" / "l0" / "part.jsonl").open()][:2000]
        sample += [json.loads(line)["text"] for line in (root / "small" / "l1" / "part.jsonl").open()][:2000]
        tok = train_bpe(sample, args.vocab, "<|endoftext|>")
        (root / "tok.json").write_text(tok.to_str())
        results = {}
        for name in ("small", "large"):
            r = results[name] = build(root / name, root / f"home-{name}", root / "tok.json", args.langs, args.workers)
            print(f"{name}: {r['mb']:.0f} MB of text -> {r['tokens'] / 1e6:.1f}M tokens in {r['seconds']:.1f} s "
                  f"= {r['tokens_per_s'] / 1e6:.2f}M tokens/s with {args.workers} workers; peak RSS of all processes "
                  f"{r['peak_rss'] / 2**20:.0f} MiB")
        small, large = results["small"], results["large"]
        marginal = (large["tokens"] - small["tokens"]) / max(1e-9, large["seconds"] - small["seconds"])
        print(f"marginal throughput (the extra tokens over the extra seconds: start-up and tokenizer loading "
              f"excluded): {marginal / 1e6:.2f}M tokens/s")
        grow = (large["peak_rss"] - small["peak_rss"]) / 2**20
        print(f"{args.factor:g}x the text adds {grow:+.0f} MiB of peak RSS "
              f"(vocab {args.vocab}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
