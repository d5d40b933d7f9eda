"""How noisy is a plasticity probe, and how noisy is an onset? (the measurement behind docs/probe-noise.md)

Two measurements on finished runs whose checkpoints were kept (train with ``probe.in_run = false``):

1. ``probe``: re-probe chosen checkpoints of one run K times (replicate r trains on its own window
   of the probe language, ``probe.replicate_offset``) at several probe lengths. The spread of the
   replicates' AUCs is the probe's own noise, in dAUC points (100 * sd / AUC of the first
   checkpoint's mean), next to the signal (how far the score moves over training).
2. ``onsets``: probe every scheduled checkpoint of several runs (seeds) with K replicates at one
   length, then report each seed's onset using the first k <= K replicates, and the spread of the
   onsets between seeds. That spread is training noise plus the probe noise left after averaging.

Results are appended to a JSONL file (one row per probe replicate), so an interrupted measurement
resumes where it stopped; ``summary`` prints the tables from that file.

    python benchmarks/probe_noise.py probe RUN_DIR --out noise.jsonl --lengths 50,100,200,400 --replicates 4
    python benchmarks/probe_noise.py onsets RUN_DIR [RUN_DIR ...] --out onsets.jsonl --length 200 --replicates 2
    python benchmarks/probe_noise.py summary noise.jsonl onsets.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from plasticlm.checkpoint import checkpoints_dir, load_checkpoint
from plasticlm.config import load_config
from plasticlm.cpu import configure_cpu
from plasticlm.data.prepare import prepare_data
from plasticlm.model import GPT, build_gpt_config, non_embedding_params
from plasticlm.onset import find_onset
from plasticlm.optim import peak_lr
from plasticlm.probe import ProbeSetup, _probe_once, probe_task_indices, replicate_offset
from plasticlm.runlog import read_json, read_jsonl
from plasticlm.step import resolve_device


def _done(out: Path) -> set[tuple]:
    return {(r["run"], r["checkpoint"], r["steps"], r["replicate"], r["replicates"]) for r in read_jsonl(out)}


def _probe(run_dir: Path, names: list[str], lengths: list[int], replicates: int, out: Path) -> None:
    cfg = load_config(run_dir / "config.toml")
    data = prepare_data(cfg, progress=False)
    gpt = build_gpt_config(cfg.model, data.vocab_size)
    device = resolve_device(cfg.train.device)
    done = _done(out)
    for steps in lengths:
        pcfg = dataclasses.replace(cfg, probe=dataclasses.replace(cfg.probe, steps=steps,
                                                                  eval_every=max(1, steps // 10)))
        setup = ProbeSetup.build(pcfg, data, gpt, peak_lr(cfg.optim, non_embedding_params(gpt)), device)
        for name in names:
            meta = read_json(checkpoints_dir(run_dir) / name / "meta.json")
            model = None
            for r in range(replicates):
                key = (run_dir.name, name, steps, r, replicates)
                if key in done:
                    continue
                if model is None:
                    model = GPT(gpt).to(device)
                    load_checkpoint(checkpoints_dir(run_dir) / name, model, restore_rng=False)
                t0 = time.perf_counter()
                res = _probe_once(model, setup, replicate_offset(r, replicates, len(setup.train_tokens)))
                row = {"run": run_dir.name, "preset": cfg.model.preset, "seed": cfg.train.seed, "checkpoint": name,
                       "task_index": meta["task_index"] + 1, "steps": steps, "replicate": r,
                       "replicates": replicates, "auc": res.auc, "seconds": round(time.perf_counter() - t0, 2)}
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), file=sys.stderr)


def _scheduled(run_dir: Path, every: int) -> list[str]:
    """Checkpoint names at the run's probe points (cycle ends by default), or every N tasks."""
    cfg = load_config(run_dir / "config.toml")
    n_lang = len(cfg.stream.languages)
    if every:
        points = [k for k in range(n_lang * cfg.stream.cycles) if (k + 1) % every == 0]
    else:
        cfg = dataclasses.replace(cfg, probe=dataclasses.replace(cfg.probe, after_languages=[]))
        points = probe_task_indices(cfg, n_lang * cfg.stream.cycles, n_lang, cfg.stream.tokens_per_task)
    have = {p.name for p in checkpoints_dir(run_dir).iterdir()}
    return [n for n in (f"task-{k:06d}" for k in points) if n in have]


def _summary(paths: list[Path]) -> dict:
    rows = [r for p in paths for r in read_jsonl(p) if r["auc"] is not None]
    # 1. probe noise per (run, length, K): pooled within-checkpoint sd in dAUC points
    noise = []
    groups: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["run"], r["steps"], r["replicates"])][r["checkpoint"]].append(r["auc"])
    for (run, steps, k), by_ckpt in sorted(groups.items()):
        full = {c: a for c, a in by_ckpt.items() if len(a) == k}
        if len(full) < 2 or k < 2:
            continue
        ordered = sorted(full)
        means = np.array([np.mean(full[c]) for c in ordered])
        sd = 100 * np.sqrt(np.mean([np.var(full[c], ddof=1) for c in ordered])) / means[0]
        dauc = 100 * (means / means[0] - 1)
        noise.append({"run": run, "steps": steps, "replicates": k, "checkpoints": len(ordered),
                      "sd_dauc_one_probe": round(float(sd), 3), "se_dauc_mean": round(float(sd / np.sqrt(k)), 3),
                      "signal_range_dauc": round(float(np.ptp(dauc)), 3),
                      "seconds_per_probe": round(float(np.mean([r["seconds"] for r in rows if r["run"] == run
                                                                and r["steps"] == steps])), 2)})
    # 2. onsets per seed using the first k replicates
    onsets = []
    by_run: dict[tuple, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    meta = {}
    for r in rows:
        key = (r["preset"], r["steps"], r["replicates"], r["run"])
        by_run[key][r["task_index"]][r["replicate"]] = r["auc"]
        meta[key] = r["seed"]
    sizes: dict[tuple, list] = defaultdict(list)
    for (preset, steps, k, run), pts in sorted(by_run.items()):
        for use in sorted({1, k}):
            xs = sorted(t for t, reps in pts.items() if all(i in reps for i in range(use)))
            if len(xs) < 4:
                continue
            auc = np.array([np.mean([pts[t][i] for i in range(use)]) for t in xs])
            o = find_onset(xs, 100 * (auc / auc[0] - 1))
            sizes[(preset, steps, k, use)].append((meta[(preset, steps, k, run)], o.onset_task_index, o.code))
    for (preset, steps, _k, use), per_seed in sorted(sizes.items()):
        found = [t for _, t, _ in per_seed if t is not None]
        onsets.append({"preset": preset, "steps": steps, "replicates_used": use,
                       "seeds": [s for s, _, _ in per_seed], "onsets": [t for _, t, _ in per_seed],
                       "codes": [c for _, _, c in per_seed],
                       "spread_tasks": None if len(found) < 2 else float(max(found) - min(found))})
    return {"noise": noise, "onsets": onsets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="K replicates at several lengths on a few checkpoints of one run")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--lengths", default="50,100,200,400")
    p.add_argument("--replicates", type=int, default=4)
    p.add_argument("--checkpoints", default="", help="comma-separated names (default: 4 spread over the run)")
    p.add_argument("--threads", type=int, default=1)
    o = sub.add_parser("onsets", help="every scheduled checkpoint of several runs, K replicates, one length")
    o.add_argument("run_dirs", nargs="+")
    o.add_argument("--out", required=True)
    o.add_argument("--length", type=int, default=200)
    o.add_argument("--replicates", type=int, default=2)
    o.add_argument("--every", type=int, default=0, help="probe every N tasks (default: the run's cycle ends)")
    o.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("summary", help="print the tables (JSON) from measurement files")
    s.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.cmd == "summary":
        print(json.dumps(_summary([Path(f) for f in args.files]), indent=1))
        return
    configure_cpu(args.threads)
    torch.manual_seed(0)
    if args.cmd == "probe":
        run_dir = Path(args.run_dir)
        names = [n for n in args.checkpoints.split(",") if n]
        if not names:
            sched = _scheduled(run_dir, 0)
            names = [sched[i] for i in np.linspace(0, len(sched) - 1, 4).round().astype(int)]
        _probe(run_dir, names, [int(x) for x in args.lengths.split(",")], args.replicates, Path(args.out))
    else:
        for d in args.run_dirs:
            run_dir = Path(d)
            _probe(run_dir, _scheduled(run_dir, args.every), [args.length], args.replicates, Path(args.out))


if __name__ == "__main__":
    main()
