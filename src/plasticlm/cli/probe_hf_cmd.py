"""`plasticlm probe --model DIR_OR_NAME CONFIG`: the plasticity probe of a transformers causal LM."""

from __future__ import annotations

import argparse
from pathlib import Path

from plasticlm.cli._common import print_json, print_table
from plasticlm.errors import PlasticError

HF_ONLY = ("tokenizer", "out", "dtype", "overrides")
"""Options that only mean something with --model."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR_OR_NAME",
                   help="probe a transformers causal LM instead of a run: a model directory (save_pretrained), a "
                   "directory of checkpoint directories (step-1000/, checkpoint-2000/), or a name in the local "
                   "Hugging Face cache (never downloaded); the positional argument is then the CONFIG")
    p.add_argument("--tokenizer", metavar="DIR", help="with --model: the tokenizer's directory (default: the model's)")
    p.add_argument("--out", metavar="DIR", help="with --model: where probes.jsonl and probes/ go "
                   "(default: runs/probe-<model>-<config>)")
    p.add_argument("--device", default=None, help="with --model: cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="with --model: autocast dtype (default: bfloat16 on a GPU, float32 on CPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --model: override a config value, e.g. --set probe.steps=50 (repeatable)")


def check_run_dir_args(args) -> None:
    """Refuse the --model options on a run directory (where they would be silently ignored)."""
    given = [f"--{k.replace('overrides', 'set')}" for k in HF_ONLY if getattr(args, k)]
    if args.device is not None:
        given.append("--device")
    if given:
        raise PlasticError(f"{', '.join(given)} only apply with --model DIR CONFIG; a run directory is probed with "
                           "its own config, tokenizer and train.device")


def default_out(model: str, config: str) -> Path:
    return Path("runs") / f"probe-{Path(model.rstrip('/')).name}-{Path(config).stem}"


def run(args) -> int:
    from plasticlm.probe_hf import probe_model

    if args.checkpoint is not None or args.workers != 1:
        raise PlasticError("--checkpoint and --workers apply to a run directory; with --model every checkpoint of "
                           "the series is probed in this process")
    out = Path(args.out) if args.out else default_out(args.model, args.run_dir)
    doc = probe_model(args.model, args.run_dir, out=out, tokenizer=args.tokenizer, overrides=args.overrides,
                      device=args.device or "auto", dtype=args.dtype, progress=not (args.quiet or args.json))
    doc["rows"] = [{k: v for k, v in r.items() if k != "curve"} for r in doc["rows"]]
    if args.json:
        print_json(doc)
        return 0
    print(f"{doc['model']}: probe language {doc['probe_language']}, {doc['device']} {doc['dtype']}, "
          f"tokenizer {doc['tokenizer']} (documents end with {doc['eot_token']!r})")
    onset = doc["onset"]
    score = {x["checkpoint"]: x["dauc"] for x in onset["scores"]}
    print_table([{"checkpoint": r["checkpoint"], "task_index": r["task_index"],
                  "tokens_seen": "-" if r["tokens_seen"] is None else r["tokens_seen"],
                  "auc": "-" if r["auc"] is None else f"{r['auc']:.4f}",
                  "dauc": f"{score[r['checkpoint']]:+.2f}" if r["checkpoint"] in score else "-",
                  "dauc_scratch": "-" if r["dauc_scratch"] is None else f"{r['dauc_scratch']:+.2f}",
                  "seconds": r["seconds"]} for r in doc["rows"]],
                ["checkpoint", "task_index", "tokens_seen", "auc", "dauc", "dauc_scratch", "seconds"])
    scratch = next((r["scratch_auc"] for r in doc["rows"] if r.get("scratch_auc")), None)
    if scratch:
        print(f"scratch baseline (the architecture freshly initialised): AUC {scratch:.4f}")
    if onset["onset_task_index"] is not None:
        print(f"onset: task_index {onset['onset_task_index']} ({onset['code']})"
              + (f"; {onset['reason']}" if onset["reason"] else ""))
    else:
        print(f"no onset ({onset['code']}): {onset['reason']}")
    print(f"rows: {doc['out']}/probes.jsonl ({len(doc['probed'])} new)")
    return 0
