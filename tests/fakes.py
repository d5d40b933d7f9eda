"""Small in-memory stand-ins for prepared data, for fast loop tests (no corpus build)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from plasticlm.config import load_config


def fake_data(langs=("aa", "bb", "cc", "vi"), vocab=64, n_train=20_000, n_val=2_000, seed=0):
    """Each language: a random first-order Markov chain over a vocabulary slice (learnable, distinct)."""
    rng = np.random.default_rng(seed)
    train, val = {}, {}
    for i, lang in enumerate(langs):
        lo = (i * 13) % (vocab - 24)
        trans = rng.dirichlet(np.full(24, 0.3), size=24)
        seq = np.empty(n_train + n_val, np.int64)
        s = 0
        for t in range(len(seq)):
            s = rng.choice(24, p=trans[s])
            seq[t] = lo + s
        train[lang] = seq[:n_train].astype(np.uint16)
        val[lang] = seq[n_train:].astype(np.uint16)
    return SimpleNamespace(train=train, val=val, bytes_per_token={k: 2.0 for k in langs}, vocab_size=vocab,
                           eot_id=vocab - 1, tokenizer_path="fake")


def tiny_config(*extra: str):
    """3 languages x 2 cycles x 5 steps of 4 x 16 tokens on the 25K preset."""
    return load_config(None, [
        "model.preset=25K", "model.seq_len=16", "stream.languages=[aa,bb,cc]", "stream.tokens_per_task=320",
        "stream.cycles=2", "train.batch_size=4", "train.log_every=2", "eval.sequences=4", "eval.batch_size=4",
        "probe.language=vi", "probe.after_languages=[]", "data.source=synthetic", *extra,
    ])
