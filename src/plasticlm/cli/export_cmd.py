"""`plasticlm export RUN_DIR --to DIR`: a run's checkpoint as a Hugging Face transformers GPT-2."""

from __future__ import annotations

from plasticlm.cli._common import add_json, print_json


def run(args) -> int:
    from plasticlm.hf import export_run

    summary = export_run(args.run_dir, args.to, checkpoint=args.checkpoint, tokenizer=args.tokenizer,
                         overwrite=args.overwrite)
    if args.json:
        print_json(summary)
        return 0
    c = summary["config"]
    print(f"{summary['run_dir']} {summary['checkpoint']} (step {summary['step']}, {summary['tokens']:,} tokens) -> "
          f"{summary['to']}")
    print(f"GPT-2: {c['n_layer']} layers, n_embd {c['n_embd']}, {c['n_head']} heads, vocab {c['vocab_size']}, "
          f"n_positions {c['n_positions']}, {c['activation_function']}; tokenizer from {summary['tokenizer']}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({summary['to']!r}) "
          f"and AutoTokenizer.from_pretrained({summary['to']!r})")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="write a run's checkpoint as a Hugging Face transformers GPT-2 (+ tokenizer)",
        description="Writes config.json, model.safetensors and the run's tokenizer (tokenizer.json, "
        "tokenizer_config.json, special_tokens_map.json) into DIR, loadable with transformers' "
        "AutoModelForCausalLM / AutoTokenizer.from_pretrained(DIR) and giving the same logits. The "
        "model of arXiv:2606.24752 is GPT-2's architecture, so the mapping is exact. Start a run from "
        "such a directory with --set model.init_from=DIR (see the README).",
    )
    p.add_argument("run_dir", help="a run directory written by `plasticlm train`")
    p.add_argument("--to", required=True, metavar="DIR", help="output directory (created; must be new or empty)")
    p.add_argument("--checkpoint", help="checkpoint name (task-000007) or 0-based task index; default: the latest")
    p.add_argument("--tokenizer", metavar="PATH",
                   help="the run's tokenizer.json (or 'bytes') when it cannot be found from the run's config")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in DIR")
    add_json(p)
    p.set_defaults(func=run)
