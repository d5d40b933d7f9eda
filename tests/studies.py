"""A small study directory for report tests, written by the real sweep (``plasticlm.sweep.run_sweep``).

Sizes 25K and 85K are really trained (fake data, probes after every task), each on the continual
and the stationary stream, so every run-directory file has its real format. Sizes 200K, 390K and
670K are written by hand before the sweep runs (status "done", so the sweep keeps them), with a
dAUC curve whose window-3 minimum lies at a chosen task index, per-sequence probe losses for the
bootstrap CI and a sawtooth of validation bits per byte: the scaling-law fit then has three sizes
whatever the tiny runs' noisy curves do. study.json, onsets.csv and fit.json are the sweep's own.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from plasticlm.config import Config, dumps_toml
from plasticlm.runlog import atomic_write_bytes, atomic_write_json, atomic_write_text
from plasticlm.runspec import expand
from plasticlm.sweep import run_sweep
from tests.fakes import WITH_PROBES, fake_data, tiny_config

TOKENS_PER_TASK = 320
STUDY = ("probe.steps=6", "probe.eval_every=2", "probe.sequences=4", "probe.every_tokens=320", "probe.bootstrap=200",
         "stream.cycles=3", "train.keep_last=1", "sweep.presets=[25K, 85K, 200K, 390K, 670K]", "sweep.stationary=true",
         WITH_PROBES)
DESIGNED = {"200K": 3.0, "390K": 5.0, "670K": 6.0}
"""Task index of the designed onset of each hand-written continual run (stationary: 2 task instances later)."""


def _params(preset: str) -> int:
    from plasticlm.model import from_preset, non_embedding_params

    return non_embedding_params(from_preset(preset))


def _designed_run(run_dir: Path, cfg: Config, onset: float, n_probes: int = 9, seed: int = 0) -> None:
    """A finished run with a parabolic dAUC curve whose minimum is at task index ``onset``."""
    langs, probe_lang = cfg.stream.languages, cfg.probe.language
    atomic_write_text(run_dir / "config.toml", dumps_toml(cfg))
    params = _params(cfg.model.preset)
    atomic_write_json(run_dir / "run.json", {
        "status": "done", "wall_time_s": 3.0 + params / 1e5,
        "summary": {"non_embedding_params": params, "peak_lr": 0.01, "steps": 5 * n_probes}})
    rng = np.random.default_rng(seed + params)
    metrics = []
    bpb = {lang: 3.0 for lang in [*langs, probe_lang]}
    metrics.append({"step": 0, "tokens": 0, "task_index": -1, "cycle": -1, "lang": None,
                    **{f"val/{k}/bpb": v for k, v in bpb.items()}})
    stationary = cfg.stream.kind == "stationary"
    for k in range(n_probes):
        lang = "mix" if stationary else langs[k % len(langs)]
        for other in langs:  # continual: the trained language drops, the others drift back up (a sawtooth)
            bpb[other] *= 0.96 if stationary else 0.82 if other == lang else 1.08
            bpb[other] = min(3.0, bpb[other])
        bpb[probe_lang] = 3.0 + 0.05 * k
        metrics.append({"step": 5 * (k + 1), "tokens": TOKENS_PER_TASK * (k + 1), "task_index": k,
                        "cycle": k // len(langs), "lang": lang, **{f"val/{x}/bpb": v for x, v in bpb.items()}})
    atomic_write_text(run_dir / "metrics.jsonl", "".join(f"{json.dumps(r)}\n" for r in metrics))
    steps = [0, 2, 4, 6]
    shape = np.array([4.2, 3.7, 3.4, 3.3])
    rows = []
    for k in range(1, n_probes + 1):
        level = 1 + (0.012 * (k - onset) ** 2 - 0.012 * (1 - onset) ** 2)  # AUC_k / AUC_1
        eps = rng.normal(0, 0.05, size=(1, 4))  # per sequence: each probe ranks them differently
        eps -= eps.mean()  # the mean curve stays exactly shape * level
        per_seq = (shape * level)[:, None] * (1 + eps)
        curve = per_seq.mean(axis=1)
        auc = float(np.trapezoid(curve, steps) / steps[-1])
        name = f"task-{k - 1:06d}"
        buf = io.BytesIO()
        np.savez_compressed(buf, per_sequence=per_seq.astype(np.float32), eval_steps=np.asarray(steps))
        atomic_write_bytes(run_dir / "probes" / f"{name}.npz", buf.getvalue())
        scratch = 3.75
        rows.append({"checkpoint": name, "task_index": k, "cycle": (k - 1) // len(langs),
                     "lang": "mix" if stationary else langs[(k - 1) % len(langs)],
                     "tokens_seen": TOKENS_PER_TASK * k, "auc": auc,
                     "final_loss": float(curve[-1]), "curve": [[s, float(v)] for s, v in zip(steps, curve)],
                     "scratch_auc": scratch, "dauc_scratch": 100 * (auc / scratch - 1),
                     "probe_tokens": 6 * 4 * 16, "seconds": 0.02, "per_sequence": f"probes/{name}.npz"})
    atomic_write_text(run_dir / "probes.jsonl", "".join(f"{json.dumps(r)}\n" for r in rows))


def make_study(root: Path) -> Path:
    """Write the study into ``root`` (about 6 s on 2 CPU cores) and return it."""
    cfg = tiny_config(*STUDY, f"sweep.out_dir={root}")
    for spec in expand(cfg):
        if spec.preset in DESIGNED:
            shift = 0.0 if spec.stream == "continual" else 2.0
            _designed_run(spec.run_dir(root), spec.cfg, DESIGNED[spec.preset] + shift)
    run_sweep(cfg, root, data=fake_data(), quiet=True)
    return root
