"""`plasticlm presets`: the size ladder with parameter and FLOP counts."""

from __future__ import annotations

from plasticlm.cli._common import add_json, print_json, print_table
from plasticlm.presets import MICRO_PRESETS, preset_names


def preset_rows(vocab_size: int, seq_len: int) -> list[dict]:
    from plasticlm.model import block_params, flops_per_token, from_preset, non_embedding_params, total_params

    rows = []
    for name in preset_names():
        c = from_preset(name, vocab_size=vocab_size, seq_len=seq_len)
        rows.append({
            "name": name,
            "ladder": "micro" if name in MICRO_PRESETS else "paper",
            "n_layer": c.n_layer,
            "d_model": c.d_model,
            "n_head": c.n_head,
            "head_dim": c.head_dim,
            "non_embedding_params": non_embedding_params(c),
            "block_params": block_params(c),
            "total_params": total_params(c),
            "flops_per_token": flops_per_token(c),
        })
    return rows


def run(args) -> int:
    rows = preset_rows(args.vocab_size, args.seq_len)
    if args.json:
        print_json(rows)
    else:
        print(f"vocab_size={args.vocab_size} seq_len={args.seq_len}")
        print_table(rows, ["name", "ladder", "n_layer", "d_model", "n_head", "head_dim",
                           "non_embedding_params", "total_params", "flops_per_token"])
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "presets", help="list model size presets with parameter and FLOP counts",
        description="The paper's eight sizes (arXiv:2606.24752) and the CPU micro ladder. "
        "non_embedding_params = 12 L d^2 + 14 L d (the blocks); total_params adds the tied token "
        "embedding, position embedding and final LayerNorm; flops_per_token = 6N + 12 L H K T.",
    )
    p.add_argument("--vocab-size", type=int, default=151_680,
                   help="vocabulary for total_params and FLOPs (default: Qwen3's 151,680, as in the paper)")
    p.add_argument("--seq-len", type=int, default=2048, help="sequence length (default 2048, as in the paper)")
    add_json(p)
    p.set_defaults(func=run)
