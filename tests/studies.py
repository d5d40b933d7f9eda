"""A small study directory for report tests: real tiny runs plus hand-made runs with designed onsets.

Layout as `plasticlm study` writes it (config.toml, study.json, runs/<name>/, onsets.csv, fit.json).
The 25K and 85K continual runs and the 25K stationary run are really trained (fake data, probes
after every task), so every run-directory file has its real format. Three larger sizes are written
by hand with a dAUC curve whose window-3 minimum lies at a chosen task index, per-sequence probe
losses for the bootstrap CI, and a sawtooth of validation bits per byte, so that the scaling-law
fit has three or more sizes whatever the tiny runs' noisy curves do. onsets.csv comes from
``analysis.onset_from_run`` on every run, fit.json from an OLS fit of the onsets (the formulas of
``plasticlm fit``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from plasticlm.analysis import onset_from_run
from plasticlm.config import dumps_toml
from plasticlm.experiment import train_run
from plasticlm.runlog import atomic_write_bytes, atomic_write_json, atomic_write_text
from tests.fakes import fake_data, tiny_config

TOKENS_PER_TASK = 320
PROBE = ("probe.steps=6", "probe.eval_every=2", "probe.sequences=4", "probe.every_tokens=320", "stream.cycles=3",
         "train.keep_last=1")
REAL = [("25K-s0-continual", "25K", "continual"), ("85K-s0-continual", "85K", "continual"),
        ("25K-s0-stationary", "25K", "stationary")]
DESIGNED = [("200K-s0-continual", "200K", 3.0), ("390K-s0-continual", "390K", 5.0),
            ("670K-s0-continual", "670K", 6.0)]  # (name, preset, task index of the designed onset)
ONSET_COLUMNS = ["name", "preset", "stream", "non_embedding_params", "seed", "onset_task_index", "onset_tokens",
                 "ci95_low", "ci95_high", "net_degradation_tokens"]


def _params(preset: str) -> int:
    from plasticlm.model import from_preset, non_embedding_params

    return non_embedding_params(from_preset(preset))


def _designed_run(run_dir: Path, preset: str, onset: float, n_probes: int = 9, seed: int = 0) -> None:
    """A finished run with a parabolic dAUC curve whose minimum is at task index ``onset``."""
    cfg = tiny_config(*PROBE, f"model.preset={preset}")
    langs, probe_lang = cfg.stream.languages, cfg.probe.language
    atomic_write_text(run_dir / "config.toml", dumps_toml(cfg))
    params = _params(preset)
    atomic_write_json(run_dir / "run.json", {
        "status": "done", "wall_time_s": 3.0 + params / 1e5,
        "summary": {"non_embedding_params": params, "peak_lr": 0.01, "steps": 5 * n_probes}})
    rng = np.random.default_rng(seed + params)
    metrics = []
    bpb = {lang: 3.0 for lang in [*langs, probe_lang]}
    metrics.append({"step": 0, "tokens": 0, "task_index": -1, "cycle": -1, "lang": None,
                    **{f"val/{k}/bpb": v for k, v in bpb.items()}})
    for k in range(n_probes):
        lang = langs[k % len(langs)]
        for other in langs:  # the trained language drops, the others drift back up: a sawtooth
            bpb[other] = bpb[other] * 0.82 if other == lang else min(3.0, bpb[other] * 1.08)
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
                     "lang": langs[(k - 1) % len(langs)], "tokens_seen": TOKENS_PER_TASK * k, "auc": auc,
                     "final_loss": float(curve[-1]), "curve": [[s, float(v)] for s, v in zip(steps, curve)],
                     "scratch_auc": scratch, "dauc_scratch": 100 * (auc / scratch - 1),
                     "probe_tokens": 6 * 4 * 16, "seconds": 0.02, "per_sequence": f"probes/{name}.npz"})
    atomic_write_text(run_dir / "probes.jsonl", "".join(f"{json.dumps(r)}\n" for r in rows))


def _ols(u: np.ndarray, v: np.ndarray) -> tuple[float, float, float, float, float]:
    """(slope, intercept, slope se, residual sd, Sxx) of v on u."""
    sxx = float(np.sum((u - u.mean()) ** 2))
    b = float(np.sum((u - u.mean()) * (v - v.mean())) / sxx)
    c = float(v.mean() - b * u.mean())
    s = math.sqrt(float(np.sum((v - c - b * u) ** 2)) / (u.size - 2)) if u.size > 2 else math.nan
    return b, c, s / math.sqrt(sxx), s, sxx


def fit_document(P: list[float], T: list[float], extrapolate_to=(1e6, 1e7)) -> dict:
    """The `plasticlm fit --json` document for these points (power, linear, linear_log, exponential)."""
    P_, T_ = np.asarray(P, float), np.asarray(T, float)
    logs = {"power": (True, True), "linear": (False, False), "linear_log": (True, False), "exponential": (False, True)}
    laws = {"power": "T = a * P^b", "linear": "T = a + b * P", "linear_log": "T = a + b * ln P",
            "exponential": "T = a * exp(b * P)"}
    t975 = stats.t.ppf(0.975, P_.size - 2)

    def fit(p, t, form):
        lu, lv = logs[form]
        u, v = (np.log(p) if lu else p), (np.log(t) if lv else t)
        b, c, se, s, sxx = _ols(u, v)
        return b, c, se, s, sxx, u

    def predict(form, b, c, p):
        v = c + b * (np.log(p) if logs[form][0] else p)
        return np.exp(v) if logs[form][1] else v

    fits = {}
    for form in logs:
        b, c, se, _, _, _ = fit(P_, T_, form)
        pred = predict(form, b, c, P_)
        loo = [predict(form, *fit(np.delete(P_, i), np.delete(T_, i), form)[:2], P_[i]) for i in range(P_.size)]
        fits[form] = {"law": laws[form], "a": math.exp(c) if logs[form][1] else c, "b": b, "b_se": se,
                      "b_ci95": [b - t975 * se, b + t975 * se],
                      "r2": 1 - float(np.sum((T_ - pred) ** 2) / np.sum((T_ - T_.mean()) ** 2)),
                      "rmse": float(np.sqrt(np.mean((T_ - pred) ** 2))),
                      "loo_rmse": float(np.sqrt(np.mean((T_ - np.array(loo)) ** 2)))}
    fits["power"].update(b_boot95=[fits["power"]["b"] - 0.3, fits["power"]["b"] + 0.25], b_boot_n=2000)
    b, c, _, s, sxx, u = fit(P_, T_, "power")
    extra = []
    for p0 in extrapolate_to:
        u0 = math.log(p0)
        half = t975 * s * math.sqrt(1 + 1 / P_.size + (u0 - u.mean()) ** 2 / sxx)
        onset = math.exp(c + b * u0)
        lo, hi = math.exp(c + b * u0 - half), math.exp(c + b * u0 + half)
        extra.append({"params": p0, "onset": onset, "pi95": [lo, hi], "tokens": onset * TOKENS_PER_TASK,
                      "tokens_pi95": [lo * TOKENS_PER_TASK, hi * TOKENS_PER_TASK]})
    return {"n": int(P_.size), "n_sizes": int(np.unique(P_).size), "fits": fits,
            "best_by_loo": min(fits, key=lambda f: fits[f]["loo_rmse"]), "tokens_per_task": TOKENS_PER_TASK,
            "extrapolations": extra}


def write_onsets_and_fit(root: Path, entries: list[dict], n_boot: int = 50) -> list[dict]:
    """onsets.csv from ``onset_from_run`` on every run, and fit.json over the continual onsets."""
    rows = []
    for e in entries:
        doc = onset_from_run(root / e["run_dir"], n_boot=n_boot)
        ci = doc["ci95"] or [None, None]
        rows.append({"name": e["name"], "preset": e["preset"], "stream": e["stream"],
                     "non_embedding_params": e["non_embedding_params"], "seed": e["seed"],
                     "onset_task_index": doc["onset_task_index"], "onset_tokens": doc["onset_tokens"],
                     "ci95_low": ci[0], "ci95_high": ci[1], "net_degradation_tokens": doc["net_degradation_tokens"]})
    out = io.StringIO()
    w = csv.DictWriter(out, ONSET_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
    atomic_write_text(root / "onsets.csv", out.getvalue())
    pts = [(r["non_embedding_params"], r["onset_task_index"]) for r in rows
           if r["stream"] == "continual" and r["onset_task_index"] is not None]
    atomic_write_json(root / "fit.json", fit_document([p for p, _ in pts], [t for _, t in pts]))
    return rows


def make_study(root: Path) -> Path:
    """Write the study into ``root`` (about 5 s on 2 CPU cores) and return it."""
    data = fake_data()
    entries = []
    for name, preset, stream in REAL:
        cfg = tiny_config(*PROBE, f"model.preset={preset}", f"stream.kind={stream}")
        summary = train_run(cfg, root / "runs" / name, data=data, quiet=True)
        entries.append({"name": name, "preset": preset, "seed": 0, "stream": stream, "run_dir": f"runs/{name}",
                        "non_embedding_params": summary["non_embedding_params"], "status": "done",
                        "wall_time_s": summary["wall_time_s"]})
    for name, preset, onset in DESIGNED:
        _designed_run(root / "runs" / name, preset, onset)
        entries.append({"name": name, "preset": preset, "seed": 0, "stream": "continual", "run_dir": f"runs/{name}",
                        "non_embedding_params": _params(preset), "status": "done", "wall_time_s": 4.2})
    cfg = tiny_config(*PROBE, "sweep.presets=[25K,85K,200K,390K,670K]", "sweep.stationary=true")
    atomic_write_text(root / "config.toml", dumps_toml(cfg))
    write_onsets_and_fit(root, entries)
    atomic_write_json(root / "study.json", {
        "config": "config.toml", "created": "2026-11-29T07:00:00+00:00", "runs": entries,
        "stages": {"train": {"status": "done", "seconds": 4.1}, "probe": {"status": "done", "seconds": 0.0},
                   "onsets": {"status": "done", "seconds": 0.3}, "fit": {"status": "done", "seconds": 0.1}}})
    return root
