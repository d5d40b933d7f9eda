"""Plasticity probes of any Hugging Face ``transformers`` causal LM, from local files only.

The recipe is plasticlm's own probe (``probe.py``, arXiv:2606.24752 "Probe"), run through its public
``ProbeSetup`` / ``run_probe`` / ``probe_row``: a copy of the model is fine-tuned on the config's
held-out probe language (``probe.*``: steps, eval interval, fixed validation sequences, replicates;
the AdamW recipe of ``optim.*``; ``train.batch_size``, ``model.seq_len``), its score is the AUC of the
validation loss over the probe (``onset.auc``), and the scratch baseline is the same probe of the same
architecture freshly initialised (``AutoModelForCausalLM.from_config`` after ``torch.manual_seed
(train.seed)``), so ``dauc_scratch = 100 (AUC / AUC_scratch - 1)``.

Data: the config's data source gives the probe language's documents, split into train and validation
exactly as for plasticlm's own runs (``data/prepare.py``: same documents, same order, same split), and
they are tokenized with the *model's* tokenizer (its fast ``tokenizer.json``; the end-of-document
token is its eos token, else its bos token). The token shards are cached by that tokenizer's hash.

Checkpoints: ``--model DIR`` is one model (``DIR/config.json``) or a series: subdirectories holding a
``config.json`` whose names end in a number (``step-1000/``, ``checkpoint-2000/``), sorted by it. A
row's ``task_index`` is, for a ``plasticlm export``, the task instances its run had trained (as in the
run's own probes.jsonl); otherwise the number in the directory's name (0 for a name without one), so
the onset of a series is in that unit (usually optimizer steps). ``tokens_seen`` comes from
plasticlm_export.json or the HF Trainer's trainer_state.json (``num_input_tokens_seen``), else null.
The onset is plasticlm's rule (``onset.find_onset`` on dAUC against the first probe, window 3, with
the bootstrap CI over validation sequences of ``onset.onset_ci_from_curves``).

Nothing is downloaded: a name that is not a directory is looked up in the local Hugging Face cache
only (``local_files_only``). Weights are kept in float32 (the optimizer's master copy); ``train.dtype
= "bfloat16"`` (the default on a GPU) runs the forward passes under autocast, as plasticlm's runs do.
The model's own dropout settings apply during the probe (plasticlm's model has none).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import snapshot_download
from torch import nn

from plasticlm.config import Config, dumps_json, load_config
from plasticlm.cpu import configure_cpu
from plasticlm.data.paths import home_dir, read_cached_json
from plasticlm.data.prepare import prepare_data
from plasticlm.data.stream import Task
from plasticlm.errors import PlasticError
from plasticlm.hf import MARKER
from plasticlm.onset import dauc, find_onset, onset_ci_from_curves, onset_document
from plasticlm.optim import peak_lr
from plasticlm.probe import ProbeResult, ProbeSetup, probe_row, run_probe
from plasticlm.progress import progress_bar
from plasticlm.runlog import JsonlLog, atomic_write_bytes, atomic_write_json, read_json, read_jsonl
from plasticlm.step import resolve_device

LAST_NUMBER = re.compile(r"(\d+)\D*$")
"""The number a checkpoint directory's name ends with (``step-1000``, ``checkpoint-2000``)."""
IDENTITY = "probe_hf.json"
"""What an output directory's probes were made of (model, tokenizer, config); a mismatch is refused."""
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures")


def _transformers():
    """The ``transformers`` module (an optional dependency), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise PlasticError("probing a transformers model needs transformers: pip install 'plasticlm[hf]'") from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


# ---------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class HFModelSpec:
    """What ``ProbeSetup`` needs of a model (its vocabulary size), and what identifies a transformers
    architecture (its config without paths and versions) in the scratch baseline's cache key."""

    vocab_size: int
    model_type: str
    architecture: str  # the config as sorted JSON
    transformers: str


class CausalLM(nn.Module):
    """A transformers causal LM with plasticlm's model interface: ``model(idx)`` gives the logits (B, T, V),
    ``model(idx, targets)`` the mean next-token cross-entropy in nats (as ``model.GPT``)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, idx_BT: torch.Tensor, targets_BT: torch.Tensor | None = None) -> torch.Tensor:
        logits_BTV = self.hf(input_ids=idx_BT, use_cache=False).logits
        if targets_BT is None:
            return logits_BTV
        B, T = idx_BT.shape
        return F.cross_entropy(logits_BTV.float().reshape(B * T, -1), targets_BT.reshape(B * T))


def model_spec(hf_config: Any) -> HFModelSpec:
    cfg = {k: v for k, v in hf_config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    return HFModelSpec(vocab_size=int(hf_config.vocab_size), model_type=str(hf_config.model_type),
                       architecture=json.dumps(cfg, sort_keys=True, default=str),
                       transformers=_transformers().__version__)


def non_embedding_count(model: nn.Module) -> int:
    """Parameters outside every ``nn.Embedding`` (token and position tables) and outside an untied output
    head: the count ``optim.lr``'s power law takes (arXiv:2606.24752 counts non-embedding parameters)."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = model.hf.get_output_embeddings() if isinstance(model, CausalLM) else None
    if head is not None:
        embedded.add(id(head.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in embedded)


def _context_length(hf_config: Any) -> int | None:
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length"):
        value = getattr(hf_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_config_of(path: Path) -> Any:
    """The transformers config of a model directory (PlasticError when it is not one)."""
    tf = _transformers()
    try:
        return tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise PlasticError(f"{path}: not a transformers model directory ({_first_line(e)}); give a directory "
                           "written by save_pretrained (config.json and the weights)") from None


def load_causal_lm(path: Path, device: torch.device) -> tuple[CausalLM, Any]:
    """(the model in float32 on ``device``, wrapped; its transformers config)."""
    tf = _transformers()
    hf_config = load_config_of(path)
    if type(hf_config) not in tf.MODEL_FOR_CAUSAL_LM_MAPPING:  # checked first: the loader's own error is slow
        raise PlasticError(f"{path}: a {hf_config.model_type!r} model is not a causal language model that "
                           "AutoModelForCausalLM can load; give a decoder LM (GPT-2, Llama, OLMo, Qwen, ...)")
    dtype_kw = "dtype" if int(tf.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        hf = tf.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **{dtype_kw: torch.float32})
    except ValueError as e:
        raise PlasticError(f"{path}: not a causal language model that AutoModelForCausalLM can load "
                           f"({_first_line(e)}); give a decoder LM (GPT-2, Llama, OLMo, Qwen, ...)") from None
    except OSError as e:
        raise PlasticError(f"{path}: its weights cannot be read ({_first_line(e)}); give a directory written by "
                           "save_pretrained with its weights (model.safetensors)") from None
    return CausalLM(hf.float()).to(device), hf_config


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------------------------------- finding models


@dataclass(frozen=True)
class HFCheckpoint:
    name: str
    path: Path
    task_index: int
    step: int | None  # the number in the directory name
    tokens_seen: int | None


def resolve_model(model: str) -> Path:
    """A local directory, or a model name found in the local Hugging Face cache (never downloaded)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PlasticError(f"--model {model} is a file; give a model directory (save_pretrained) or a directory "
                               "of checkpoint directories")
        return path
    try:
        return Path(snapshot_download(repo_id=model, local_files_only=True))
    except Exception as e:  # any failure means: not available offline
        raise PlasticError(
            f"--model {model}: no such directory, and not in the local Hugging Face cache ({_first_line(e)}). "
            "Nothing is downloaded: give a local directory, or fetch the model first where there is network "
            f"(`huggingface-cli download {model}`, or from_pretrained) and copy the cache here") from None


def _checkpoint(path: Path, name: str) -> HFCheckpoint:
    m = LAST_NUMBER.search(name)
    step = int(m.group(1)) if m else None
    export = read_cached_json(path / MARKER)
    if export and isinstance(export.get("task_index"), int):
        return HFCheckpoint(name, path, export["task_index"] + 1, step, export.get("tokens"))
    state = read_cached_json(path / "trainer_state.json") or {}
    tokens = state.get("num_input_tokens_seen") or None
    return HFCheckpoint(name, path, step or 0, step, tokens)


def find_checkpoints(root: Path, name: str | None = None) -> list[HFCheckpoint]:
    """The subdirectories of ``root`` that hold a config.json and whose names end in a number, in order of
    it (a series; also the HF Trainer's output_dir, whose top-level final model is then not probed), else
    ``root`` itself (one model, named ``name`` or its directory name)."""
    found = [p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    numbered = sorted((int(m.group(1)), p) for p in found if (m := LAST_NUMBER.search(p.name)))
    if not numbered and (root / "config.json").is_file():
        return [_checkpoint(root, name or root.name)]
    if not numbered:
        raise PlasticError(
            f"{root} holds no config.json and no checkpoint directories (step-1000/, checkpoint-2000/ with a "
            "config.json each): give a transformers model directory (save_pretrained) or a directory of them")
    steps = [n for n, _ in numbered]
    dup = sorted({n for n in steps if steps.count(n) > 1})
    if dup:
        names = [p.name for n, p in numbered if n == dup[0]]
        raise PlasticError(f"{root}: checkpoints {', '.join(names)} have the same number {dup[0]}; keep one of "
                           "them (the series is ordered by the number in the names)")
    return [_checkpoint(p, p.name) for _, p in numbered]


# ---------------------------------------------------------------------------------------- tokenizer and data


def model_tokenizer(tokenizer_dir: Path, home: Path) -> tuple[Path, str, int]:
    """(tokenizer.json path, end-of-document token, vocabulary size) of a transformers tokenizer.

    Its fast (``tokenizers``) form is written, content-addressed, to ``$PLASTICLM_HOME/hf-tokenizers``,
    so that plasticlm's data pipeline can tokenize and cache shards with it."""
    tf = _transformers()
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PlasticError(f"{tokenizer_dir}: no tokenizer could be loaded ({_first_line(e)}); pass --tokenizer DIR "
                           "(a directory with the model's tokenizer.json or tokenizer files)") from None
    if not getattr(tok, "is_fast", False):
        raise PlasticError(f"{tokenizer_dir}: the tokenizer has no fast form (tokenizer.json); convert it with "
                           "transformers (AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) with tokenizers "
                           "installed) or pass --tokenizer DIR")
    eot = tok.eos_token or tok.bos_token
    if not eot:
        raise PlasticError(f"{tokenizer_dir}: the tokenizer has no eos or bos token to separate documents; set "
                           "eos_token in its tokenizer_config.json")
    text = tok.backend_tokenizer.to_str().encode("utf-8")
    path = home / "hf-tokenizers" / hashlib.sha256(text).hexdigest()[:16] / "tokenizer.json"
    if not path.is_file():
        atomic_write_bytes(path, text)
    return path, str(eot), len(tok)


def probe_config(config_path: str | Path, overrides: list[str], base: Config, tokenizer: Path, eot: str, device: str,
                 dtype: str | None) -> Config:
    """``base`` (the config with ``overrides``) with the model's tokenizer and the device (dtype: bfloat16 on
    a GPU, else float32)."""
    if base.stream.kind == "permuted":
        raise PlasticError("stream.kind = 'permuted': its probe permutes plasticlm's own token ids; probe a "
                           "transformers model with a continual or stationary config")
    dev = resolve_device(device)
    dtype = dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    return load_config(config_path, [*overrides, f"data.tokenizer={tokenizer}", f"data.eot_token={eot}",
                                     "model.vocab_size=0", f"train.device={dev}", f"train.dtype={dtype}"])


# ---------------------------------------------------------------------------------------- scratch baseline


def scratch_probe(setup: ProbeSetup, hf_config: Any, seed: int) -> dict[str, Any]:
    """The probe of the architecture freshly initialised (``from_config`` after ``manual_seed(seed)``),
    cached under ``$PLASTICLM_HOME/scratch`` by ``ProbeSetup.key`` (architecture, recipe, data, seed)."""
    tf = _transformers()
    cache = home_dir(setup.cfg.data.home) / "scratch"
    key = "hf-" + setup.key(seed)
    path = cache / f"{key}.json"
    if path.is_file():
        return read_json(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CausalLM(tf.AutoModelForCausalLM.from_config(hf_config).float()).to(setup.device)
    result = run_probe(model, setup)
    atomic_write_bytes(cache / f"{key}.npz", result.npz_bytes())
    doc = {"key": key, "seed": seed, "auc": result.auc, "final_loss": result.final_loss,
           "replicate_aucs": result.replicate_aucs, "eval_steps": result.eval_steps, "curve": result.curve,
           "seconds": result.seconds, "npz": f"{key}.npz", "diverged": result.diverged}
    atomic_write_json(path, doc)
    return doc


# ---------------------------------------------------------------------------------------- the series


def _row(ckpt: HFCheckpoint, result: ProbeResult, scratch: dict | None) -> dict[str, Any]:
    """A probes.jsonl row (``probe.probe_row``) for a checkpoint that has no task: task_index as the module
    docstring says, cycle and lang null, plus the checkpoint's path and step."""
    task = Task(ckpt.task_index - 1, 0, 0, "", False, False)
    row = probe_row(ckpt.name, task, ckpt.tokens_seen, result, scratch)
    row.update(cycle=None, lang=None, step=ckpt.step, path=str(ckpt.path))
    return row


def series_onset(out: Path, rows: list[dict[str, Any]], window: int = 3, n_boot: int = 1000) -> dict[str, Any]:
    """The onset document (``onset.onset_document``) of the rows' dAUC against the first probe."""
    scored = sorted((r for r in rows if r.get("auc") and not r.get("diverged")), key=lambda r: r["task_index"])
    x = np.array([r["task_index"] for r in scored], dtype=np.float64)
    first = scored[0]["auc"] if scored else 1.0
    y = np.array([dauc(r["auc"], first) for r in scored], dtype=np.float64)
    result = find_onset(x, y, window)
    ci = None
    if n_boot > 0 and len(scored) >= window + 2:
        curves = []
        for r in scored:
            with np.load(out / r["per_sequence"]) as z:
                curves.append(z["per_sequence"].astype(np.float64))
                steps = z["eval_steps"]
        ci = onset_ci_from_curves(curves, steps, x, window=window, n_boot=n_boot)
    doc = onset_document(result, str(out), ci=ci)
    at = {r["task_index"]: r for r in scored}
    doc["onset_tokens"] = at[doc["onset_task_index"]]["tokens_seen"] if doc["onset_task_index"] is not None else None
    doc["scores"] = [{"checkpoint": r["checkpoint"], "task_index": r["task_index"], "auc": r["auc"],
                      "dauc": float(s), "dauc_scratch": r.get("dauc_scratch")} for r, s in zip(scored, y)]
    return doc


def _check_out(out: Path, identity: dict[str, Any]) -> None:
    """Refuse an output directory holding probes of another model, tokenizer or config."""
    old = read_cached_json(out / IDENTITY)
    if old is not None and old != identity:
        what = [k for k in identity if old.get(k) != identity[k]]
        raise PlasticError(f"--out {out} holds probes of another {' and '.join(what)}: choose another --out, or "
                           "delete it to probe again")


def probe_model(model: str, config_path: str | Path, *, out: str | Path, tokenizer: str | None = None,
                overrides: list[str] | None = None, device: str = "auto", dtype: str | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Probe a transformers causal LM or a series of its checkpoints; rows go to ``out/probes.jsonl``
    (checkpoints that already have a row there are skipped). Returns the rows, the scratch baseline and
    the onset."""
    root = resolve_model(model)
    checkpoints = find_checkpoints(root, None if Path(model).expanduser().exists() else model.replace("/", "--"))
    tok_dir = Path(tokenizer).expanduser() if tokenizer else next(
        (d for d in [root, *(c.path for c in checkpoints)] if _has_tokenizer(d)), None)
    if tok_dir is None or not tok_dir.is_dir():
        raise PlasticError(f"no tokenizer in {tokenizer or root}: pass --tokenizer DIR (a directory with the "
                           "model's tokenizer.json or tokenizer files)")
    base = load_config(config_path, overrides)
    tok_path, eot, n_tokens = model_tokenizer(tok_dir, home_dir(base.data.home))
    cfg = probe_config(config_path, overrides or [], base, tok_path, eot, device, dtype)
    dev = resolve_device(cfg.train.device)
    if dev.type == "cpu":
        configure_cpu()
    out = Path(out)
    identity = {"model": str(root.resolve()), "tokenizer": tok_path.parent.name, "config": json.loads(dumps_json(cfg))}
    _check_out(out, identity)
    data = prepare_data(cfg, [cfg.probe.language], progress=progress)
    log = JsonlLog(out / "probes.jsonl")
    done = {r["checkpoint"] for r in read_jsonl(out / "probes.jsonl")}
    todo = [c for c in checkpoints if c.name not in done]
    bar = progress_bar(total=len(todo), unit="probe", desc=f"probing {root.name}") if progress and todo else None
    scratch: dict[str, dict] = {}
    probed, lr = [], None
    for ckpt in todo:
        wrapped, hf_config = load_causal_lm(ckpt.path, dev)
        _check_fit(ckpt, hf_config, wrapped, cfg, n_tokens)
        spec = model_spec(hf_config)
        lr = peak_lr(cfg.optim, non_embedding_count(wrapped))
        setup = ProbeSetup.build(cfg, data, spec, lr, dev)
        if cfg.probe.scratch_baseline and spec.architecture not in scratch:
            scratch[spec.architecture] = scratch_probe(setup, hf_config, cfg.train.seed)
        result = run_probe(wrapped, setup)
        del wrapped
        atomic_write_json(out / IDENTITY, identity)  # written with the first row: a failed start leaves nothing
        atomic_write_bytes(out / "probes" / f"{ckpt.name}.npz", result.npz_bytes())
        row = _row(ckpt, result, scratch.get(spec.architecture))
        log.append(row, unique_key="checkpoint")
        probed.append(ckpt.name)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    rows = sorted(read_jsonl(out / "probes.jsonl"), key=lambda r: r["task_index"])
    return {"model": str(root), "out": str(out), "tokenizer": str(tok_dir), "eot_token": eot,
            "device": str(dev), "dtype": cfg.train.dtype, "lr": lr, "probe_language": cfg.probe.language,
            "probed": probed, "rows": rows, "scratch": next(iter(scratch.values()), None),
            "onset": series_onset(out, rows, n_boot=cfg.probe.bootstrap)}


def _has_tokenizer(d: Path) -> bool:
    return any((d / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json"))


def _check_fit(ckpt: HFCheckpoint, hf_config: Any, model: CausalLM, cfg: Config, n_tokens: int) -> None:
    """The probe's sequences fit the model's context, and the tokenizer's ids its embedding table."""
    context = _context_length(hf_config)
    if context is not None and cfg.model.seq_len > context:
        raise PlasticError(f"{ckpt.path}: model.seq_len = {cfg.model.seq_len} is longer than the model's context of "
                           f"{context} positions: --set model.seq_len={context}")
    rows = model.hf.get_input_embeddings().num_embeddings
    if n_tokens > rows:
        raise PlasticError(f"{ckpt.path}: the tokenizer has {n_tokens} tokens, more than the model's {rows} "
                           "embeddings: pass --tokenizer with the model's own tokenizer")

