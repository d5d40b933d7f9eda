"""Data pipeline throughput on this machine (prints numbers, never fails).

    python benchmarks/bench_data.py [--vocab 1024] [--synthetic-bytes 1000000] [--langs en,zh,...]

1. synthetic source, end to end in a temporary cache: corpus generation, BPE training, shard
   building (tokenization + writing), in MB of text per second;
2. debian-docs, if its corpus is already built in $PLASTICLM_HOME (`plasticlm corpus build`):
   BPE training and tokenization throughput per language, without writing to the cache.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from plasticlm.config import load_config
from plasticlm.data.corpus import iter_documents, read_manifest
from plasticlm.data.prepare import default_languages, prepare_data
from plasticlm.data.shards import dtype_for, encode_documents
from plasticlm.data.splits import split_documents
from plasticlm.data.tokenizer import HFTokenizer, take_bytes, train_bpe


def bench_synthetic(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, ["data.source=synthetic", f"data.synthetic_bytes={args.synthetic_bytes}",
                                 f"data.vocab_size={args.vocab}", f"data.home={tmp}"])
        langs = default_languages(cfg)
        t0 = time.perf_counter()
        from plasticlm.data.corpus import build_corpus

        corpora = build_corpus(cfg.data, langs, progress=False)
        t1 = time.perf_counter()
        p = prepare_data(cfg, progress=False)
        t2 = time.perf_counter()
        mb = sum(m["bytes"] for m in corpora.values()) / 1e6
        tokens = sum(len(a) for a in p.train.values()) + sum(len(a) for a in p.val.values())
        print(f"synthetic: {len(langs)} languages, {mb:.1f} MB of text, vocab {p.vocab_size}")
        print(f"  corpus generation         {t1 - t0:6.2f} s  {mb / (t1 - t0):7.1f} MB/s")
        print(f"  tokenizer + shards        {t2 - t1:6.2f} s  {mb / (t2 - t1):7.1f} MB/s  ({tokens:,} tokens)")
        t3 = time.perf_counter()
        prepare_data(cfg, progress=False)
        print(f"  prepare_data, all cached  {time.perf_counter() - t3:6.3f} s")


def bench_debian(args) -> None:
    cfg = load_config(None, [f"data.vocab_size={args.vocab}"])
    langs = args.langs.split(",") if args.langs else default_languages(cfg)
    manifests = {lang: read_manifest(cfg.data, lang, "debian-docs") for lang in langs}
    if any(m is None for m in manifests.values()):
        missing = [lang for lang, m in manifests.items() if m is None]
        print(f"debian-docs: not built for {', '.join(missing)} (run `plasticlm corpus build`); skipped")
        return
    docs = {lang: split_documents(list(iter_documents(Path(m["path"]))), lang, 0, cfg.data.val_fraction)[0]
            for lang, m in manifests.items()}
    sample = min(cfg.data.tokenizer_sample_bytes, *(sum(len(d.encode()) for d in x) for x in docs.values()))
    t0 = time.perf_counter()
    bpe = train_bpe((d for lang in langs for d in take_bytes(docs[lang], sample)), args.vocab, "<|endoftext|>")
    t_train = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        Path(path).write_text(bpe.to_str())
        tok = HFTokenizer(path)
    print(f"debian-docs: BPE {args.vocab} on {len(langs)} x {sample / 1e6:.2f} MB in {t_train:.2f} s")
    total_mb = total_s = 0.0
    for lang in langs:
        mb = sum(len(d.encode()) for d in docs[lang]) / 1e6
        t0 = time.perf_counter()
        n = sum(len(encode_documents(tok, docs[lang][i : i + 256], dtype_for(tok.vocab_size)))
                for i in range(0, len(docs[lang]), 256))
        dt = time.perf_counter() - t0
        total_mb, total_s = total_mb + mb, total_s + dt
        print(f"  {lang}: {mb:5.2f} MB -> {n:>9,} tokens ({mb * 1e6 / n:.2f} B/token)  {mb / dt:6.1f} MB/s")
    print(f"  all: {total_mb:.1f} MB tokenized at {total_mb / total_s:.1f} MB/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--synthetic-bytes", type=int, default=1_000_000)
    ap.add_argument("--langs", default="", help="debian-docs languages (default: the config's)")
    args = ap.parse_args()
    np.set_printoptions(precision=3)
    for bench in (bench_synthetic, bench_debian):
        try:
            bench(args)
        except Exception as e:  # a benchmark reports, it never fails
            print(f"{bench.__name__}: failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
