"""Hugging Face ``transformers`` interop: a run's checkpoint as a GPT-2 checkpoint, and back.

The GPT of arXiv:2606.24752 (``model.py``) has GPT-2's architecture: pre-LN blocks, LayerNorm with
bias, learned absolute positions, the token embedding tied with the output head, biases in every
linear layer, a GeLU MLP of width 4 d, causal attention scaled by 1/sqrt(head_dim). A checkpoint
therefore maps onto ``GPT2LMHeadModel`` tensor for tensor:
| plasticlm                    | transformers GPT-2                                       |
|------------------------------|----------------------------------------------------------|
| wte, wpe, ln_f               | transformer.wte, transformer.wpe, transformer.ln_f       |
| blocks.{i}.ln_1, ln_2        | transformer.h.{i}.ln_1, ln_2                             |
| blocks.{i}.attn.qkv, proj    | transformer.h.{i}.attn.c_attn, c_proj (weights transposed) |
| blocks.{i}.mlp.fc, proj      | transformer.h.{i}.mlp.c_fc, c_proj (weights transposed)  |
| lm_head (tied to wte)        | lm_head (tied to wte; not stored)                        |

GPT-2 keeps its projections in ``Conv1D`` modules whose weight is (in, out), ``nn.Linear``'s is
(out, in): hence the transposes. Both lay the fused qkv output out as [q | k | v], each head-major.
GPT-2 needs n_embd = n_head x head_dim (every preset has it). The activation must be the same
function: ``model.gelu = "exact"`` (erf) is transformers' ``"gelu"`` (``F.gelu``) and ``"tanh"`` is
``"gelu_pytorch_tanh"`` (``F.gelu(approximate="tanh")``, the same kernel; ``"gelu_new"``, GPT-2's
own, is the same formula written out and is accepted on import). LayerNorm eps is the module's
(1e-5, GPT-2's default); dropout is 0 since the model has none.

Files are written and read with ``safetensors`` and ``json`` alone, so neither export nor import needs
``transformers`` installed; loading the export with it (``AutoModelForCausalLM.from_pretrained``)
needs the ``hf`` extra. The export directory holds config.json, model.safetensors, the run's
tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json, so that
``AutoTokenizer.from_pretrained`` works) and plasticlm_export.json (where it came from).

Import: ``model.init_from = DIR`` starts a run's model from such a checkpoint (``load_gpt2_into``,
called by the trainer); the run's model section must describe the same shape, and its vocabulary
must be the checkpoint's (``data.tokenizer = DIR/tokenizer.json``); ``gpt2_overrides(DIR)`` lists
the ``--set`` options that make it so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from plasticlm.checkpoint import find_checkpoint, load_checkpoint
from plasticlm.config import load_config
from plasticlm.data.paths import home_dir
from plasticlm.errors import PlasticError
from plasticlm.model import GPT, GPTConfig, build_gpt_config
from plasticlm.runlog import atomic_write_text, environment_info

HF_ACTIVATION = {"exact": "gelu", "tanh": "gelu_pytorch_tanh"}
"""model.gelu -> transformers ``activation_function`` computing the same function (same torch kernel)."""
IMPORT_ACTIVATION = {"gelu": "exact", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}
MARKER = "plasticlm_export.json"

_RENAMES = (
    (r"^blocks\.(\d+)\.", r"h.\1."),
    (r"\.attn\.qkv\.", ".attn.c_attn."),
    (r"\.attn\.proj\.", ".attn.c_proj."),
    (r"\.mlp\.fc\.", ".mlp.c_fc."),
    (r"\.mlp\.proj\.", ".mlp.c_proj."),
)


def hf_name(name: str) -> tuple[str, bool]:
    """The GPT-2 tensor name of a plasticlm parameter (without the ``transformer.`` prefix) and whether
    its matrix is transposed (the Conv1D weights inside the blocks)."""
    out = name
    for pattern, repl in _RENAMES:
        out = re.sub(pattern, repl, out)
    transposed = name.startswith("blocks.") and name.endswith(".weight") and ".ln_" not in name
    return out, transposed


def _own_params(model: GPT) -> dict[str, torch.Tensor]:
    """The model's parameters without the tied lm_head (stored once, as wte)."""
    return {n: p for n, p in model.state_dict().items() if n != "lm_head.weight"}


def to_gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """GPT-2 tensors (``transformer.*``, float32, contiguous) of a plasticlm model."""
    out = {}
    for name, t in _own_params(model).items():
        key, transposed = hf_name(name)
        t = t.detach().float().cpu()
        out["transformer." + key] = (t.t() if transposed else t).contiguous().clone()
    return out


def check_gpt2_compatible(c: GPTConfig) -> None:
    if c.n_head * c.head_dim != c.d_model:
        raise PlasticError(
            f"GPT-2 needs d_model = n_head x head_dim, but this model has d_model {c.d_model} and "
            f"{c.n_head} heads of {c.head_dim}: only models with n_head = d_model / head_dim can be exported"
        )
    if c.gelu not in HF_ACTIVATION:
        raise PlasticError(f"model.gelu = {c.gelu!r} has no transformers equivalent "
                           f"(known: {', '.join(HF_ACTIVATION)})")


def gpt2_config(model: GPT, eot_id: int) -> dict[str, Any]:
    """config.json of the GPT-2 that computes what ``model`` computes."""
    c = model.config
    check_gpt2_compatible(c)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.seq_len,
        "n_ctx": c.seq_len,
        "n_embd": c.d_model,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,  # 4 * n_embd, as model.MLP
        "activation_function": HF_ACTIVATION[c.gelu],
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "summary_first_dropout": 0.0,
        "layer_norm_epsilon": model.ln_f.eps,
        "initializer_range": c.init_std,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "torch_dtype": "float32",
    }


# ---------------------------------------------------------------------------------------- import


def read_gpt2_config(hf_dir: str | Path) -> dict[str, Any]:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise PlasticError(f"{hf_dir}: no config.json; give a directory holding a transformers GPT-2 checkpoint "
                           "(written by `plasticlm export` or `save_pretrained`)")
    return json.loads(path.read_text(encoding="utf-8"))


def gpt_config_from_gpt2(cfg: dict[str, Any], init_std: float = 0.02) -> GPTConfig:
    """The plasticlm GPTConfig of a GPT-2 config.json (seq_len = n_positions); a PlasticError names
    every setting that plasticlm's model cannot reproduce exactly."""
    problems = []
    if cfg.get("model_type") != "gpt2":
        problems.append(f"model_type is {cfg.get('model_type')!r}, not 'gpt2'")
    act = cfg.get("activation_function", "gelu_new")
    if act not in IMPORT_ACTIVATION:
        problems.append(f"activation_function {act!r} (plasticlm has {', '.join(IMPORT_ACTIVATION)})")
    d, h = int(cfg.get("n_embd", 768)), int(cfg.get("n_head", 12))
    if cfg.get("n_inner") not in (None, 4 * d):
        problems.append(f"n_inner {cfg.get('n_inner')} (plasticlm's MLP is 4 x n_embd = {4 * d})")
    eps = float(cfg.get("layer_norm_epsilon", 1e-5))
    if eps != torch.nn.LayerNorm(1).eps:
        problems.append(f"layer_norm_epsilon {eps} (plasticlm uses {torch.nn.LayerNorm(1).eps})")
    for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("tie_word_embeddings", True), ("add_cross_attention", False)):
        if bool(cfg.get(key, want)) != want:
            problems.append(f"{key} = {cfg.get(key)} (plasticlm needs {want})")
    if d % h:
        problems.append(f"n_embd {d} is not a multiple of n_head {h}")
    if problems:
        raise PlasticError("this GPT-2 checkpoint cannot be reproduced by plasticlm's model: " + "; ".join(problems))
    return GPTConfig(n_layer=int(cfg.get("n_layer", 12)), d_model=d, n_head=h, head_dim=d // h,
                     vocab_size=int(cfg.get("vocab_size", 50257)), seq_len=int(cfg.get("n_positions", 1024)),
                     init_std=init_std, gelu=IMPORT_ACTIVATION[act])


def gpt2_overrides(hf_dir: str | Path) -> list[str]:
    """``--set`` options that make a run's model the shape of the GPT-2 checkpoint in ``hf_dir`` and
    start it from those weights (the tokenizer too, when the directory has a tokenizer.json)."""
    c = gpt_config_from_gpt2(read_gpt2_config(hf_dir))
    sets = ["model.preset=", "model.depth=0", f"model.n_layer={c.n_layer}", f"model.d_model={c.d_model}",
            f"model.n_head={c.n_head}", f"model.head_dim={c.head_dim}", f"model.gelu={c.gelu}",
            f"model.vocab_size={c.vocab_size}", f"model.init_from={hf_dir}"]
    if (Path(hf_dir) / "tokenizer.json").is_file():
        sets.append(f"data.tokenizer={Path(hf_dir) / 'tokenizer.json'}")
    return sets


def read_gpt2_tensors(hf_dir: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors (or of the shards listed in model.safetensors.index.json)."""

    hf_dir = Path(hf_dir)
    single, index = hf_dir / "model.safetensors", hf_dir / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_file(str(hf_dir / f)))
        return out
    raise PlasticError(f"{hf_dir}: no model.safetensors; convert the checkpoint to safetensors first "
                       "(transformers: model.save_pretrained(DIR, safe_serialization=True))")


@torch.no_grad()
def load_gpt2_into(model: GPT, hf_dir: str | Path) -> dict[str, Any]:
    """Copy the weights of the GPT-2 checkpoint in ``hf_dir`` into ``model`` (in place).

    The checkpoint must have the model's shape, activation and vocabulary size; its position table
    may be longer than ``model.seq_len`` (the first seq_len positions are used). A PlasticError lists
    the ``--set`` options that would make the run match.
    """
    src = gpt_config_from_gpt2(read_gpt2_config(hf_dir))
    c = model.config
    fields = ("n_layer", "d_model", "n_head", "head_dim", "gelu", "vocab_size")
    diff = [f"{f} {getattr(c, f)} vs {getattr(src, f)}" for f in fields if getattr(c, f) != getattr(src, f)]
    if src.seq_len < c.seq_len:
        diff.append(f"seq_len {c.seq_len} vs n_positions {src.seq_len}")
    if diff:
        raise PlasticError(
            f"model.init_from = {hf_dir}: the run's model differs from the checkpoint ({'; '.join(diff)}); "
            f"run with: {' '.join('--set ' + s for s in gpt2_overrides(hf_dir))}"
        )
    tensors = read_gpt2_tensors(hf_dir)
    loaded = {}
    for name, param in _own_params(model).items():
        key, transposed = hf_name(name)
        t = tensors.get("transformer." + key, tensors.get(key))  # hub GPT-2 files omit the prefix
        if t is None:
            raise PlasticError(f"{hf_dir}: tensor transformer.{key} is missing (needed for {name})")
        t = t.t() if transposed else t
        if name == "wpe.weight":
            t = t[: c.seq_len]
        if tuple(t.shape) != tuple(param.shape):
            raise PlasticError(f"{hf_dir}: tensor {key} has shape {tuple(t.shape)}, expected {tuple(param.shape)}")
        loaded[name] = t
    head = tensors.get("lm_head.weight")
    if head is not None and not torch.equal(head, tensors.get("transformer.wte.weight", tensors.get("wte.weight"))):
        raise PlasticError(f"{hf_dir}: lm_head is not tied to wte; plasticlm's model ties them")
    own = dict(model.named_parameters())
    for name, t in loaded.items():
        own[name].copy_(t.to(own[name].dtype))
    return {"init_from": str(hf_dir), "tensors": len(loaded), "n_positions": src.seq_len}


# ---------------------------------------------------------------------------------------- export


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the ByteLevel pre-tokenizer's alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_tokenizer_json(eot_token: str) -> str:
    """A tokenizer.json that encodes as ``data.tokenizer = "bytes"`` does: ids 0..255 are the UTF-8
    bytes, 256 is the end-of-document token."""

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([eot_token])
    return tok.to_str()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_tokenizer_json(cfg, meta: dict[str, Any], override: str | None = None) -> tuple[str, str]:
    """(tokenizer.json text, where it came from) of the tokenizer a run was trained with.

    ``override`` ("bytes" or a tokenizer.json path) wins; else data.tokenizer: "bytes", a path (checked
    against the hash the checkpoint recorded), or "bpe": the cached BPE whose sha256 the checkpoint
    recorded, found under $PLASTICLM_HOME/tokenizers.
    """

    choice = override or cfg.data.tokenizer
    recorded = (meta.get("data") or {}).get("tokenizer")
    if choice == "bytes":
        return byte_tokenizer_json(cfg.data.eot_token), "bytes"
    if choice != "bpe":
        path = Path(choice).expanduser()
        if not path.is_file():
            raise PlasticError(f"tokenizer file {path} does not exist; pass --tokenizer PATH to the run's "
                               "tokenizer.json")
        if override is None and recorded and _sha256(path) != recorded:
            raise PlasticError(f"{path} has changed since the run was trained (sha256 differs from the checkpoint's "
                               f"{recorded[:16]}...); pass --tokenizer PATH to the tokenizer.json it was trained with")
        return path.read_text(encoding="utf-8"), str(path)
    home = home_dir(cfg.data.home)
    if recorded:
        for path in sorted((home / "tokenizers").glob("*/tokenizer.json")):
            if _sha256(path) == recorded:
                return path.read_text(encoding="utf-8"), str(path)
    what = f"sha256 {recorded[:16]}..." if recorded else "(the checkpoint recorded no tokenizer hash)"
    raise PlasticError(
        f"the run's trained BPE {what} is not under {home / 'tokenizers'}: rebuild it with "
        "`plasticlm corpus build RUN_DIR/config.toml --tokens` (same corpus, same BPE) or pass --tokenizer PATH"
    )


def tokenizer_files(tokenizer_json: str, eot_token: str, seq_len: int) -> dict[str, str]:
    """tokenizer.json plus the two small files with which ``AutoTokenizer.from_pretrained`` loads it as a
    ``PreTrainedTokenizerFast`` whose bos/eos token is the end-of-document token."""

    tok = Tokenizer.from_str(tokenizer_json)
    if tok.token_to_id(eot_token) is None:
        raise PlasticError(f"the tokenizer has no end-of-document token {eot_token!r} (data.eot_token)")
    specials = {"bos_token": eot_token, "eos_token": eot_token}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **specials, "model_max_length": seq_len,
              "clean_up_tokenization_spaces": False}
    return {"tokenizer.json": tokenizer_json,
            "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
            "special_tokens_map.json": json.dumps(specials, indent=2) + "\n"}


def load_run_model(run_dir: str | Path, checkpoint: str | None = None) -> tuple[GPT, dict[str, Any], Any]:
    """(model, checkpoint meta, config) of one saved checkpoint of a run (default: the latest). The
    vocabulary size is read from the weights, so no data has to be prepared."""


    path = find_checkpoint(run_dir, checkpoint)
    cfg = load_config(Path(run_dir) / "config.toml")
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        tied = "wte.weight" if "wte.weight" in names else "lm_head.weight"  # save_model keeps one name
        vocab = f.get_slice(tied).get_shape()[0]
    model = GPT(build_gpt_config(cfg.model, vocab))
    meta = load_checkpoint(path, model, restore_rng=False)
    return model.eval(), meta, cfg


def _prepare_target(to: Path, overwrite: bool) -> None:
    if to.exists() and not to.is_dir():
        raise PlasticError(f"--to {to} is a file; give a directory")
    if to.is_dir() and any(to.iterdir()):
        if not (to / MARKER).is_file():
            raise PlasticError(f"--to {to} is not empty and is not a plasticlm export: choose another directory")
        if not overwrite:
            raise PlasticError(f"--to {to} already holds an export: pass --overwrite to replace it")


def export_run(run_dir: str | Path, to: str | Path, checkpoint: str | None = None, tokenizer: str | None = None,
               overwrite: bool = False) -> dict[str, Any]:
    """Write one checkpoint of a run as a transformers GPT-2 checkpoint plus its tokenizer into ``to``.

    The directory appears complete or not at all (written beside it, then renamed into place).
    Returns a summary (also written as ``plasticlm_export.json``).
    """


    run_dir, to = Path(run_dir), Path(to)
    _prepare_target(to, overwrite)
    model, meta, cfg = load_run_model(run_dir, checkpoint)
    check_gpt2_compatible(model.config)
    tok_json, tok_source = run_tokenizer_json(cfg, meta, tokenizer)
    files = tokenizer_files(tok_json, cfg.data.eot_token, model.config.seq_len)

    tok = Tokenizer.from_str(tok_json)
    if tok.get_vocab_size(with_added_tokens=True) > model.config.vocab_size:
        raise PlasticError(f"the tokenizer ({tok_source}) has {tok.get_vocab_size(with_added_tokens=True)} tokens, "
                           f"more than the model's {model.config.vocab_size}: pass --tokenizer with the run's own")
    eot_id = tok.token_to_id(cfg.data.eot_token)
    summary = {
        "to": str(to), "run_dir": str(run_dir), "checkpoint": meta["name"], "step": meta["step"],
        "tokens": meta["tokens"], "task_index": meta["task_index"], "tokenizer": tok_source,
        "config": gpt2_config(model, eot_id), "environment": environment_info(),
        "files": ["config.json", "model.safetensors", *files, MARKER],
    }
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.parent / f".{to.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(to_gpt2_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        atomic_write_text(tmp / "config.json", json.dumps(summary["config"], indent=2) + "\n")
        for name, text in files.items():
            atomic_write_text(tmp / name, text)
        provenance = {k: v for k, v in summary.items() if k != "config"}
        atomic_write_text(tmp / MARKER, json.dumps(provenance, indent=2) + "\n")
        if to.exists():
            trash = to.parent / f".{to.name}.old-{os.getpid()}"
            os.replace(to, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, to)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
