"""Diagnostics of a saved model: `plasticlm diagnose RUN_DIR|CHECKPOINT_DIR`.

For one model (loaded from a run's checkpoint) this computes, in eval mode and on FIXED held-out
batches, the correlates of plasticity loss listed in the README ("Diagnostics")
(functions in ``plasticlm.diagnostics``; each cites its source):
- on ``sequences`` validation windows of the probe language (``evaluate.fixed_windows``, the same
  windows for every checkpoint; for the permuted stream under the probe's held-out permutation, as
  ``probe.ProbeSetup``): per block, MLP dormancy (score-based, eps 0.01 as in arXiv 2606.24752) and
  feature norm of the MLP hidden units (GeLU output, ``blocks.i.mlp.act``), effective_rank, srank,
  approximate_rank and stable_rank of those features and of the residual stream after the block
  (with n and d); with ``grads`` one backward pass on the first batch gives GraMa (arXiv
  2505.24061) on the MLP pre-activations and per-block gradient norms; with ``hessian`` the top
  Hessian eigenvalue on that batch (off by default: it costs ``hessian_iters`` double backwards);
- on ``attn_sequences`` validation windows of a training language (``attn_language``, default the
  first of ``stream.languages``): attention entropy per head over the query window
  [``query_start``, seq_len) (default seq_len // 8: the paper's 256 of 2048), from q and k captured by
  a forward hook on each ``blocks.i.attn.qkv`` and computed one head and one query chunk at a time
  (``diagnostics.attention_entropy_from_qk``: never a B x H x T x T tensor), with the counts of
  lazy (> 0.9 H_max) and collapsed (< 0.1 H_max) heads (arXiv 2606.24752);
- from the weights: mean |theta| over the non-embedding parameters, L2 norm of every tensor, drift
  from the initial weights theta_0 (the run's own init, rebuilt with ``torch.manual_seed(train.seed)``
  exactly as ``train.Trainer`` builds it), Q/K/V weight norms per head and LayerNorm gain statistics.

The forward passes run in float32 (no autocast), whatever ``train.dtype`` is. Rank metrics use at
most ``rank_tokens`` token rows per layer (every k-th token, k = ceil(tokens / rank_tokens)); with
fewer rows than features the value is truncated and ``rank_n < rank_d`` says so (diagnostics spec).

Output keys are namespaced ``diag/<module>/<metric>``: ``diag/blocks.3.mlp/dormant``,
``diag/blocks.3.resid/effective_rank``, ``diag/blocks.3.attn/entropy/head0``,
``diag/params/mean_abs``, ``diag/blocks.3.attn.qkv.weight/drift``. For a run directory one row per
checkpoint at the run's probe points goes to ``RUN_DIR/diagnostics.jsonl`` (appended under a file
lock as ``probes.jsonl`` is), with ``task_index`` in task instances trained (the unit of probes.jsonl)
and ``tokens_seen``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plasticlm import diagnostics as D
from plasticlm.analysis import load_probes
from plasticlm.checkpoint import checkpoints_dir, load_checkpoint
from plasticlm.config import from_dict, load_config
from plasticlm.cpu import configure_cpu
from plasticlm.data.prepare import prepare_data
from plasticlm.data.stream import LanguageStream
from plasticlm.diagnostics_analysis import analyse_run
from plasticlm.dist_checkpoint import checkpoint_format
from plasticlm.errors import DataError, PlasticError
from plasticlm.evaluate import fixed_windows
from plasticlm.forgetting import forgetting_from_run
from plasticlm.model import GPT, GPTConfig, build_gpt_config
from plasticlm.probe import pending_checkpoints
from plasticlm.progress import progress_bar
from plasticlm.runlog import JsonlLog, read_json, read_jsonl
from plasticlm.step import resolve_device

LOG = "diagnostics.jsonl"
"""The run directory's diagnostics log (one row per diagnosed checkpoint)."""


@dataclass(frozen=True)
class DiagnoseOptions:
    """Sizes of the fixed held-out batches and the switches of `plasticlm diagnose` (CLI flags).

    The defaults keep a micro model to about a second on a CPU; raise ``sequences`` and
    ``rank_tokens`` for larger models (a rank metric needs rows >= features: 4 d_model for the MLP).
    """

    sequences: int = 8
    """Probe-language validation windows for dormancy, feature norms and ranks (and the gradient batch)."""
    attn_sequences: int = 4
    """Training-language validation windows for attention entropy."""
    attn_language: str = ""
    """Language of the attention-entropy windows; '' = the first training language."""
    query_start: int = -1
    """First query position of the entropy window; -1 = seq_len // 8 (arXiv 2606.24752: 256 of 2048)."""
    chunk: int = 256
    """Queries per block in the chunked entropy (memory: a few B x chunk x T tensors)."""
    batch_size: int = 8
    """Windows per forward pass."""
    rank_tokens: int = 4096
    """Most token rows per layer in a rank metric."""
    eps: float = 0.01
    """Dormancy / GraMa threshold on the layer-normalised score (arXiv 2606.24752: 0.01)."""
    grads: bool = True
    """One backward pass on the first probe-language batch: GraMa and per-block gradient norms."""
    hessian: bool = False
    """Top Hessian eigenvalue on that batch (costly)."""
    hessian_iters: int = 20

    def check(self, seq_len: int) -> None:
        problems = [f"{k} must be >= 1, got {getattr(self, k)}"
                    for k in ("sequences", "attn_sequences", "chunk", "batch_size", "rank_tokens", "hessian_iters")
                    if getattr(self, k) < 1]
        if not self.eps >= 0:
            problems.append(f"eps must be >= 0, got {self.eps}")
        if self.query_start >= seq_len or self.query_start < -1:
            problems.append(f"query_start must be in [0, {seq_len}) for model.seq_len = {seq_len} (or -1 for "
                            f"seq_len // 8), got {self.query_start}")
        if problems:
            raise PlasticError("diagnose: " + "; ".join(problems))

    def resolved_query_start(self, seq_len: int) -> int:
        return seq_len // 8 if self.query_start < 0 else self.query_start


# ---------------------------------------------------------------------------- accumulators


class _Features:
    """Per-layer statistics of (B, T, d) activations, accumulated over batches by forward hooks:
    sum over tokens of |h_i| (dormancy), of ||h|| (feature norm), and every k-th token row (ranks)."""

    def __init__(self, n_tokens: int, rank_tokens: int):
        self.stride = max(1, math.ceil(n_tokens / rank_tokens))
        self.offset = 0  # global index of the current batch's first token
        self.tokens = 0
        self.abs_sum: dict[str, torch.Tensor] = {}
        self.norm_sum: dict[str, float] = {}
        self.rows: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, x: torch.Tensor) -> None:
        flat = x.detach().float().reshape(-1, x.shape[-1])
        n = flat.shape[0]
        s = D.mean_abs_per_unit(flat) * n
        self.abs_sum[name] = s if name not in self.abs_sum else self.abs_sum[name] + s
        self.norm_sum[name] = self.norm_sum.get(name, 0.0) + D.feature_norm(flat) * n
        first = (-self.offset) % self.stride
        self.rows.setdefault(name, []).append(flat[first:: self.stride].clone())

    def next_batch(self, n: int) -> None:
        self.offset += n
        self.tokens += n

    def hook(self, name: str):
        return lambda module, args, out: self.add(name, out)


def _batches(windows: np.ndarray, batch_size: int, device: torch.device):
    for i in range(0, len(windows), batch_size):
        w = torch.from_numpy(windows[i: i + batch_size]).to(device)
        yield w[:, :-1], w[:, 1:]


def _ranks(out: dict[str, float], prefix: str, h: torch.Tensor) -> None:
    """The four rank metrics of one feature matrix, with n and d (diagnostics spec)."""
    for name, r in D.rank_metrics(h).items():  # one SVD for the four
        out[f"{prefix}/{name}"] = r.value
    out[f"{prefix}/rank_n"], out[f"{prefix}/rank_d"] = int(h.shape[0]), int(h.shape[1])


# ---------------------------------------------------------------------------- the passes


def _feature_pass(model: GPT, windows: np.ndarray, o: DiagnoseOptions, device: torch.device) -> dict[str, float]:
    """Dormancy, feature norms and ranks of the MLP hidden units and the residual stream per block."""
    feats = _Features(windows.shape[0] * (windows.shape[1] - 1), o.rank_tokens)
    handles = []
    for i, block in enumerate(model.blocks):
        handles.append(block.mlp.act.register_forward_hook(feats.hook(f"blocks.{i}.mlp")))
        handles.append(block.register_forward_hook(feats.hook(f"blocks.{i}.resid")))
    try:
        with torch.no_grad():
            for x, _ in _batches(windows, o.batch_size, device):
                model(x)
                feats.next_batch(x.numel())
    finally:
        for h in handles:
            h.remove()
    out: dict[str, float] = {}
    masks = []
    for name in feats.abs_sum:  # in block order, mlp before resid
        prefix = f"diag/{name}"
        if name.endswith(".mlp"):
            mask = D.unit_scores(feats.abs_sum[name] / feats.tokens) <= o.eps
            masks.append(mask)
            out[f"{prefix}/dormant"] = mask.double().mean().item()
            out[f"{prefix}/dormant_count"] = int(mask.sum())
            out[f"{prefix}/units"] = int(mask.numel())
        out[f"{prefix}/feature_norm"] = feats.norm_sum[name] / feats.tokens
        _ranks(out, prefix, torch.cat(feats.rows[name]))
    out["diag/mlp/dormant"] = D.pooled_fraction(masks)
    out["diag/mlp/dormant_count"] = sum(int(m.sum()) for m in masks)
    return out


def _attention_pass(model: GPT, windows: np.ndarray, o: DiagnoseOptions, device: torch.device) -> dict[str, float]:
    """Attention entropy per head from q, k of each block's qkv projection (chunked, per head)."""
    T = windows.shape[1] - 1
    qs = o.resolved_query_start(T)
    sums: dict[int, torch.Tensor] = {}
    seen = [0]

    def hook(i: int, n_head: int):
        def fn(module, args, out):
            q, k, _ = D.split_qkv(out.detach().float(), n_head)
            ent = D.attention_entropy_from_qk(q, k, query_start=qs, chunk=o.chunk) * q.shape[0]
            sums[i] = ent if i not in sums else sums[i] + ent
        return fn

    handles = [b.attn.qkv.register_forward_hook(hook(i, b.attn.n_head)) for i, b in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            for x, _ in _batches(windows, o.batch_size, device):
                model(x)
                seen[0] += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    h_max = D.max_attention_entropy(T, qs)
    out: dict[str, float] = {"diag/attn/h_max": h_max, "diag/attn/query_start": qs, "diag/attn/seq_len": T}
    lazy = collapsed = heads = 0
    for i in sorted(sums):
        ent = sums[i] / seen[0]
        cls = D.lazy_collapsed(ent, h_max)
        prefix = f"diag/blocks.{i}.attn"
        for h, v in enumerate(ent.tolist()):
            out[f"{prefix}/entropy/head{h}"] = v
        out[f"{prefix}/entropy"] = ent.mean().item()
        out[f"{prefix}/lazy"] = int(cls.lazy.sum())
        out[f"{prefix}/collapsed"] = int(cls.collapsed.sum())
        lazy, collapsed, heads = lazy + int(cls.lazy.sum()), collapsed + int(cls.collapsed.sum()), heads + ent.numel()
    out.update({"diag/attn/lazy": lazy, "diag/attn/collapsed": collapsed, "diag/attn/heads": heads})
    return out


def _gradient_pass(model: GPT, windows: np.ndarray, o: DiagnoseOptions, device: torch.device) -> dict[str, float]:
    """GraMa on the MLP pre-activations and gradient norms per block, from one backward pass on the
    first probe-language batch (the gradient a probe's first step would follow). ``.grad`` fields
    are restored afterwards."""
    x, y = next(_batches(windows, o.batch_size, device))
    params = list(model.parameters())
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    pre: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def fn(module, args, out):
            out.register_hook(lambda g: pre.__setitem__(i, g.detach()))
        return fn

    handles = [b.mlp.fc.register_forward_hook(keep(i)) for i, b in enumerate(model.blocks)]
    try:
        with torch.enable_grad():
            model(x, y).backward()
        out: dict[str, float] = {}
        masks = []
        for i in sorted(pre):
            mask = D.grama_mask(pre[i], o.eps)
            masks.append(mask)
            out[f"diag/blocks.{i}.mlp/grama"] = mask.double().mean().item()
        out["diag/mlp/grama"] = D.pooled_fraction(masks)
        g = D.grad_norm(model)
        out["diag/grad/norm"] = g.total
        for group, v in g.parts.items():
            out[f"diag/{group}/grad_norm"] = v
    finally:
        for h in handles:
            h.remove()
        for p, gr in zip(params, saved):
            p.grad = gr
    if o.hessian:
        top = D.hessian_top_eigenvalue(model, (x, y), iters=o.hessian_iters)
        out.update({"diag/hessian/top_eigenvalue": top.value, "diag/hessian/iters": top.iters,
                    "diag/hessian/converged": int(top.converged)})
    return out


def _parameter_stats(model: GPT, init_state: dict[str, torch.Tensor] | None) -> dict[str, float]:
    out: dict[str, float] = {"diag/params/mean_abs": D.mean_abs_param(model)}
    norms = D.param_norms(model)
    out["diag/params/norm"] = norms.total
    for name, v in norms.parts.items():
        out[f"diag/{name}/norm"] = v
    if init_state is not None:
        drift = D.drift_from_init(model, init_state)
        out["diag/params/drift"] = drift.total
        for name, v in drift.parts.items():
            out[f"diag/{name}/drift"] = v
    for name, n in D.qkv_head_norms(model).items():
        for row, what in enumerate("qkv"):
            for h, v in enumerate(n[row].tolist()):
                out[f"diag/{name}/{what}_norm/head{h}"] = v
    for name, stats in D.layernorm_gain_stats(model).items():
        for k, v in stats.items():
            out[f"diag/{name}/{k if k.startswith('bias') else 'gain_' + k}"] = v
    return out


def diagnose_model(model: GPT, probe_windows: np.ndarray, attn_windows: np.ndarray,
                   options: DiagnoseOptions | None = None, init_state: dict[str, torch.Tensor] | None = None,
                   device: torch.device | None = None) -> dict[str, float]:
    """Every diagnostic of ``model`` on the given fixed windows (rows of seq_len + 1 tokens), in eval
    mode (the mode is restored). ``init_state``: theta_0 for the drift (None: no drift). Returns the
    flat ``diag/...`` dict (module docstring). Deterministic: no RNG is drawn (the Hessian's start
    vector has its own seeded generator)."""
    o = options or DiagnoseOptions()
    o.check(probe_windows.shape[1] - 1)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = _feature_pass(model, probe_windows, o, device)
        out.update(_attention_pass(model, attn_windows, o, device))
        if o.grads or o.hessian:
            out.update(_gradient_pass(model, probe_windows, o, device))
        out.update(_parameter_stats(model, init_state))
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------- from a run's files


def initial_state(seed: int, gpt_config: GPTConfig) -> dict[str, torch.Tensor]:
    """theta_0 of a run: ``torch.manual_seed(train.seed)`` then ``GPT(config)`` on the CPU, as
    ``train.Trainer`` builds the model (under a forked RNG, so the caller's RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(gpt_config).state_dict()


def held_out_windows(cfg: Any, data: Any, vocab_size: int, options: DiagnoseOptions,
                     task_index: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """The fixed batches: (probe-language windows, attention-language windows, attention language).

    Deterministic from the run's config: ``evaluate.fixed_windows`` of each language's validation
    split. The permuted stream's probe windows get the probe's held-out permutation and its attention
    windows the permutation of the task ``task_index`` (0-based) that was just trained."""

    T = cfg.model.seq_len
    permuted = cfg.stream.kind == "permuted"
    probe_lang = cfg.stream.permuted_base if permuted else cfg.probe.language
    attn_lang = options.attn_language or (cfg.stream.permuted_base if permuted else cfg.stream.languages[0])
    for role, lang in (("probe", probe_lang), ("attention", attn_lang)):
        if lang not in data.val:
            raise DataError(f"no validation tokens for the {role} language {lang!r} (have: "
                            f"{', '.join(sorted(data.val)) or 'none'}); build the corpus with it"
                            + (" or choose another with --attn-language" if role == "attention" else ""))
    try:
        probe = fixed_windows(data.val[probe_lang], options.sequences, T)
        attn = fixed_windows(data.val[attn_lang], options.attn_sequences, T)
    except ValueError as e:
        raise DataError(f"diagnose: {e}: the validation split is too short for seq_len {T}") from e
    if permuted:
        stream = LanguageStream(cfg.stream, data.train, T, cfg.train.batch_size, vocab_size)
        probe, attn = stream.probe_permutation()[probe], stream.permutation(task_index)[attn]
    return probe, attn, attn_lang


def _checkpoint_config(path: Path, meta: dict[str, Any]):
    run_cfg = path.parent.parent / "config.toml"
    if path.parent.name == "checkpoints" and run_cfg.exists():
        return load_config(run_cfg)
    if "config" not in meta:
        raise PlasticError(f"{path}: no run config.toml two levels up and no config in meta.json")
    return from_dict(meta["config"], source=str(path / "meta.json"))


def diagnose_checkpoint(path: str | Path, data: Any = None, options: DiagnoseOptions | None = None,
                        threads: int = 0, device: str = "") -> dict[str, Any]:
    """The diagnostics row of one checkpoint directory (RUN_DIR/checkpoints/task-NNNNNN), computed on
    ``device`` ('' = the run's ``train.device``)."""

    path = Path(path)
    weights = (path / "model.safetensors").exists() or checkpoint_format(path) == "sharded"  # one process or FSDP
    if not (path / "meta.json").exists() or not weights:
        raise PlasticError(f"{path} is not a checkpoint directory (meta.json, and model.safetensors or dcp/); "
                           "give a run directory or RUN_DIR/checkpoints/task-NNNNNN")
    o = options or DiagnoseOptions()
    t0 = time.perf_counter()
    configure_cpu(threads)
    meta = read_json(path / "meta.json")
    cfg = _checkpoint_config(path, meta)
    o.check(cfg.model.seq_len)
    data = data if data is not None else prepare_data(cfg, progress=False)
    gpt_config = build_gpt_config(cfg.model, data.vocab_size)
    device = resolve_device(device or cfg.train.device)
    model = GPT(gpt_config).to(device)
    load_checkpoint(path, model, restore_rng=False)
    probe, attn, attn_lang = held_out_windows(cfg, data, gpt_config.vocab_size, o, meta["task_index"])
    diag = diagnose_model(model, probe, attn, o, initial_state(cfg.train.seed, gpt_config), device)
    settings = {**asdict(o), "attn_language": attn_lang, "query_start": int(diag["diag/attn/query_start"]),
                "probe_language": cfg.stream.permuted_base if cfg.stream.kind == "permuted" else cfg.probe.language}
    return {"checkpoint": path.name, "task_index": meta["task_index"] + 1, "cycle": meta.get("cycle"),
            "lang": meta.get("lang"), "tokens_seen": meta["tokens"], "seconds": round(time.perf_counter() - t0, 3),
            "settings": settings, **diag}


def _worker(args: tuple[str, int, dict, str]) -> dict[str, Any]:
    path, threads, options, device = args
    return diagnose_checkpoint(path, threads=threads, options=DiagnoseOptions(**options), device=device)


def diagnose_run_dir(run_dir: str | Path, workers: int = 1, checkpoint: str | None = None, data: Any = None,
                     options: DiagnoseOptions | None = None, progress: bool = True,
                     device: str = "") -> list[dict[str, Any]]:
    """Diagnose a run's saved checkpoints at its probe points post hoc (as `plasticlm probe` does),
    skipping those already in diagnostics.jsonl; rows are appended under a file lock as they finish.
    Returns the new rows in task order."""

    run_dir = Path(run_dir)
    o = options or DiagnoseOptions()
    todo = pending_checkpoints(run_dir, checkpoint, log=LOG)
    if not todo:
        return []
    log = JsonlLog(run_dir / LOG)
    rows = []
    bar = None
    if progress:
        bar = progress_bar(total=len(todo), unit="checkpoint", desc=f"diagnosing {run_dir.name}")
    paths = [checkpoints_dir(run_dir) / n for n in todo]
    if workers <= 1 or len(todo) == 1:
        results = (diagnose_checkpoint(p, data=data, options=o, device=device) for p in paths)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(_worker, [(str(p), threads, asdict(o), device) for p in paths])
    try:
        for row in results:
            log.append(row)
            rows.append(row)
            if bar:
                bar.update(1)
    finally:
        if workers > 1 and len(todo) > 1:
            pool.close()
            pool.join()
        if bar:
            bar.close()
    return sorted(rows, key=lambda r: r["task_index"])


def run_document(run_dir: str | Path, new_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`diagnose RUN_DIR --json`: the rows just written, the forgetting matrix from metrics.jsonl and
    the run's correlation / lead-lag analysis of every diagnostic against the probe score."""

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / LOG)
    probes = load_probes(run_dir)
    analysis: dict[str, Any] | str
    if not rows:
        analysis = "no diagnostics rows yet"
    elif not probes:
        analysis = f"no probes yet (probes.jsonl is missing or empty): run `plasticlm probe {run_dir}`"
    else:
        analysis = analyse_run(rows, probes)
    return {"run_dir": str(run_dir), "diagnosed": new_rows, "rows": len(rows),
            "forgetting": forgetting_from_run(run_dir), "analysis": analysis}
