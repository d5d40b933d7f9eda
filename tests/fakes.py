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


LOOP_ONLY = "train.components=[task_reset, mitigations, train_metrics, evaluate, progress, tensorboard, wandb]"
"""The loop without probes: what most loop tests need (probes cost seconds each)."""
WITH_PROBES = "train.components=[task_reset, mitigations, train_metrics, evaluate, probe, progress, tensorboard, wandb]"
"""The default component list (with probes), for tests that probe."""


TINY = ["model.preset=25K", "model.seq_len=16", "stream.languages=[aa,bb,cc]", "stream.tokens_per_task=320",
        "stream.cycles=2", "train.batch_size=4", "train.log_every=2", "eval.sequences=4", "eval.batch_size=4",
        "probe.language=vi", "probe.after_languages=[]", "data.source=synthetic"]
"""3 languages x 2 cycles x 5 steps of 4 x 16 tokens on the 25K preset, fed by ``fake_data``."""


def tiny_config(*extra: str, path=None):
    """``TINY`` over the config file ``path`` (default: none); no probes unless ``WITH_PROBES`` is
    among ``extra`` (or the file lists train.components)."""
    return load_config(path, ([] if path else [LOOP_ONLY]) + TINY + list(extra))


def patch_everywhere(monkeypatch, name: str, value) -> None:
    """Replace the function ``name`` in every loaded plasticlm module that holds it (modules bind
    their imports at import time, so patching the defining module alone would miss its users)."""
    import sys

    originals = [getattr(m, name) for k, m in list(sys.modules.items())
                 if k.startswith("plasticlm") and hasattr(m, name) and callable(getattr(m, name))]
    assert originals, f"no plasticlm module has {name!r}"
    for key, mod in list(sys.modules.items()):
        if key.startswith("plasticlm") and getattr(mod, name, None) in originals:
            monkeypatch.setattr(mod, name, value)


def use_fake_data(monkeypatch, data) -> None:
    """Every command that would build or load a corpus gets ``data`` instead."""
    import plasticlm.cli  # noqa: F401  (load the modules that bind prepare_data)
    import plasticlm.data.prepare  # noqa: F401

    patch_everywhere(monkeypatch, "prepare_data", lambda cfg, progress=True: data)
