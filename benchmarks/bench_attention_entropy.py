"""Peak memory of attention entropy at T = 2048 for a 314M-shaped layer on CPU (prints numbers, never fails).

    python benchmarks/bench_attention_entropy.py [--batch 1,2] [--chunks 128,256,512] [--seq-len 2048]

Issue 15 asks that attention entropy be memory-safe at sequence length 2048 for the 314M preset
(d_model 1280, 20 heads of 64): never a full B x H x T x T tensor. Each measurement runs in a fresh
subprocess: it builds the layer's q and k (a 1280 -> 3840 qkv linear on random inputs), resets the
kernel's peak-RSS counter (/proc/self/clear_refs, Linux), computes the entropy over the paper's
query window 256..2047, and reports the peak RSS above the RSS just before the call (VmHWM -
VmRSS). tracemalloc does not see torch's allocations; RSS does. The dense path (softmax of the
full score tensor, then ``attention_entropy``) runs too where its B x H x T x T float32 tensor is
under --dense-cap-gib, and the two results are compared.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

import torch

from plasticlm.diagnostics import attention_entropy, attention_entropy_from_qk, split_qkv

D_MODEL, N_HEAD = 1280, 20  # the 314M preset (protocol.md)
QUERY_START = 256  # arXiv 2606.24752's window: query positions 256..2047


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _dense(q: torch.Tensor, k: torch.Tensor, query_start: int) -> torch.Tensor:
    T = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    scores.masked_fill_(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
    return attention_entropy(scores.softmax(-1), query_start)


def worker(mode: str, batch: int, seq_len: int, chunk: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with torch.no_grad():
        qkv = torch.nn.Linear(D_MODEL, 3 * D_MODEL)(torch.randn(batch, seq_len, D_MODEL))
        q, k, _ = split_qkv(qkv, N_HEAD)
    gc.collect()
    reset = _reset_peak()
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    if mode == "dense":
        ent = _dense(q, k, QUERY_START)
    else:
        ent = attention_entropy_from_qk(q, k, query_start=QUERY_START, chunk=chunk)
    seconds = time.perf_counter() - t0
    return {"mode": mode, "batch": batch, "chunk": chunk, "seconds": seconds, "peak_reset": reset,
            "rss_before_mib": before / 1024, "peak_extra_mib": (_status_kib("VmHWM") - before) / 1024,
            "entropy": ent.tolist()}


def run(mode: str, batch: int, seq_len: int, chunk: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--batch", str(batch), "--seq-len", str(seq_len),
           "--chunks", str(chunk)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="1,2", help="comma-separated batch sizes (sequences)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--chunks", default="128,256,512", help="comma-separated query chunk sizes")
    ap.add_argument("--dense-cap-gib", type=float, default=1.0,
                    help="run the dense comparison only when B x H x T x T float32 is below this")
    ap.add_argument("--worker", choices=["chunked", "dense"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, int(args.batch), args.seq_len, int(args.chunks))))
        return

    T = args.seq_len
    print(f"314M-shaped attention layer: d_model {D_MODEL}, {N_HEAD} heads of 64, T = {T}, "
          f"queries {QUERY_START}..{T - 1}, CPU, 1 thread, float32")
    print(f"{'batch':>5} {'method':>14} {'peak extra MiB':>15} {'dense BxHxTxT MiB':>18} {'seconds':>8}  max |diff|")
    for batch in [int(b) for b in args.batch.split(",")]:
        dense_mib = batch * N_HEAD * T * T * 4 / 2**20
        rows = [run("chunked", batch, T, int(c)) for c in args.chunks.split(",")]
        ref = None
        if dense_mib / 1024 < args.dense_cap_gib:
            ref = run("dense", batch, T)
            rows.append(ref)
        for r in rows:
            name = "dense" if r["mode"] == "dense" else f"chunk {r['chunk']}"
            diff = "-" if ref is None else f"{max(abs(a - b) for a, b in zip(r['entropy'], ref['entropy'])):.1e}"
            flag = "" if r["peak_reset"] else " (peak not reset: upper bound)"
            print(f"{batch:>5} {name:>14} {r['peak_extra_mib']:>15.1f} {dense_mib:>18.1f} {r['seconds']:>8.2f}  "
                  f"{diff}{flag}")


if __name__ == "__main__":
    main()
