"""Plasticity diagnostics as pure tensor functions: ranks, dormancy, attention entropy, norms, sharpness.

Definitions follow the papers that introduced each measure and arXiv:2606.24752 ("Diagnostics");
each function cites its source (README, "Diagnostics"). Torch tensors (or a model) go in, numbers or
tensors come out; nothing here trains, hooks, logs or writes files. The component that runs these
at probe points (fixed held-out batches, eval mode) lives elsewhere.

Conventions:
- Feature matrices ``h`` are (n, d): n held-out tokens by d features. SVDs run in float64. Rank
  metrics need n >= d (with fewer rows the spectrum is truncated), so every rank function returns a
  ``RankResult`` carrying n and d and a ``truncated`` flag (n < d) beside the value.
- "Non-embedding" parameters are the tensors inside ``blocks.*`` (GPT.non_embedding_named_parameters):
  token embedding (tied with the output head), position embedding and the final LayerNorm are
  excluded (arXiv:2606.24752, "Models").
- Attention probabilities are (B, H, Tq, Tk) with query row q at absolute position q; a causal
  query at position q sees q + 1 keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from plasticlm.errors import PlasticError
from plasticlm.model import CausalSelfAttention

# Cumulative-fraction comparisons (srank, approximate_rank) allow this much float64 rounding, so
# that e.g. 99 equal singular values out of 100 count as reaching 0.99.
_CUMSUM_TOL = 1e-12


# --------------------------------------------------------------------------------------------
# Rank metrics of a feature matrix
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankResult:
    """A rank metric with the shape it was measured on.

    value: the metric; n: rows (tokens); d: columns (features). ``truncated`` is True when n < d:
    the spectrum then has only n values and the metric cannot exceed n (diagnostics spec, "Rank
    metrics with fewer rows than columns are truncated; report n and d beside them").
    """

    value: float
    n: int
    d: int

    @property
    def truncated(self) -> bool:
        return self.n < self.d


def _check_matrix(h: torch.Tensor) -> None:
    if not isinstance(h, torch.Tensor) or h.dim() != 2:
        raise PlasticError(f"rank metrics need an (n, d) tensor of n tokens by d features, got "
                           f"{tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__}; "
                           "flatten batch and time first (h.reshape(-1, d))")
    if h.numel() == 0:
        raise PlasticError(f"rank metrics need a non-empty matrix, got shape {tuple(h.shape)}")
    if not torch.isfinite(h).all():
        raise PlasticError("rank metrics need finite features; the matrix holds NaN or inf")


def singular_values(h: torch.Tensor) -> torch.Tensor:
    """Singular values of h (n, d) in float64, descending (diagnostics spec: SVDs in float64)."""
    _check_matrix(h)
    return torch.linalg.svdvals(h.detach().to(torch.float64))


def _result(value: float, h: torch.Tensor) -> RankResult:
    return RankResult(float(value), int(h.shape[0]), int(h.shape[1]))


def _first_reaching(fractions: torch.Tensor, level: float) -> int:
    """1-based index of the first cumulative fraction >= level (within float rounding)."""
    return int((fractions < level - _CUMSUM_TOL).sum().item()) + 1


def _effective_rank(s: torch.Tensor) -> float:
    total = s.sum()
    if total == 0:
        return 0.0
    p = s / total
    return math.exp(-torch.special.xlogy(p, p).sum().item())


def _srank(s: torch.Tensor, delta: float) -> int:
    if s.sum() == 0:
        return 0
    return _first_reaching(s.cumsum(0) / s.sum(), 1.0 - delta)


def _approximate_rank(s: torch.Tensor, threshold: float) -> int:
    s2 = s.square()
    if s2.sum() == 0:
        return 0
    return _first_reaching(s2.cumsum(0) / s2.sum(), threshold)


def _stable_rank(s: torch.Tensor) -> float:
    return 0.0 if s[0] == 0 else (s.square().sum() / s[0].square()).item()


def _check_delta(delta: float) -> None:
    if not 0.0 <= delta < 1.0:
        raise PlasticError(f"srank needs 0 <= delta < 1, got {delta}")


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise PlasticError(f"approximate_rank needs 0 < threshold <= 1, got {threshold}")


def effective_rank(h: torch.Tensor) -> RankResult:
    """exp of the entropy of the normalised singular values: p_k = sigma_k / sum sigma,
    erank = exp(-sum p_k ln p_k) with 0 ln 0 = 0; in [1, min(n, d)].

    Roy & Vetterli 2007, "The effective rank"; used by Dohare et al. 2024 (Nature, arXiv 2306.13812).
    A zero matrix has no spectrum: its value is 0.
    """
    return _result(_effective_rank(singular_values(h)), h)


def srank(h: torch.Tensor, delta: float = 0.01) -> RankResult:
    """min k with sum_{i<=k} sigma_i / sum sigma >= 1 - delta.

    Kumar et al. 2020, "Implicit under-parameterization" (arXiv 2010.14498). Dohare et al.'s code
    calls this "stable rank"; it is not (see ``stable_rank``). A zero matrix gives 0.
    """
    _check_delta(delta)
    return _result(_srank(singular_values(h), delta), h)


def approximate_rank(h: torch.Tensor, threshold: float = 0.99) -> RankResult:
    """min k with sum_{i<=k} sigma_i^2 / sum sigma^2 >= threshold (the variance kept by k directions).

    Dohare et al. 2024 (arXiv 2306.13812), "approximate rank". A zero matrix gives 0.
    """
    _check_threshold(threshold)
    return _result(_approximate_rank(singular_values(h), threshold), h)


def stable_rank(h: torch.Tensor) -> RankResult:
    """sum sigma^2 / sigma_1^2 = ||H||_F^2 / ||H||_2^2 (Rudelson & Vershynin 2007). A zero matrix gives 0."""
    return _result(_stable_rank(singular_values(h)), h)


def rank_metrics(h: torch.Tensor, delta: float = 0.01, threshold: float = 0.99) -> dict[str, RankResult]:
    """All four rank metrics from one SVD: {"effective_rank", "srank", "approximate_rank",
    "stable_rank"}, each equal to its function above (which would each take their own SVD)."""
    _check_delta(delta)
    _check_threshold(threshold)
    s = singular_values(h)
    return {"effective_rank": _result(_effective_rank(s), h), "srank": _result(_srank(s, delta), h),
            "approximate_rank": _result(_approximate_rank(s, threshold), h),
            "stable_rank": _result(_stable_rank(s), h)}


# --------------------------------------------------------------------------------------------
# Dormant units (activation-based) and GraMa (gradient-based)
# --------------------------------------------------------------------------------------------


def mean_abs_per_unit(x: torch.Tensor) -> torch.Tensor:
    """hbar_i = mean over every leading index (tokens) of |x_i|; x is (..., n_units); float64 (n_units,).

    Exposed so that a caller can accumulate hbar over several batches (weighting by token counts)
    and then call ``unit_scores``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] == 0 or x.numel() == 0:
        raise PlasticError(f"unit statistics need a (..., n_units) tensor with at least one token and "
                           f"one unit, got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    return x.detach().reshape(-1, x.shape[-1]).abs().to(torch.float64).mean(0)


def unit_scores(hbar: torch.Tensor) -> torch.Tensor:
    """s_i = hbar_i / mean_k hbar_k (the layer-normalised score of Sokar et al. 2023, arXiv 2302.12902).

    When every hbar is 0 the layer is silent and every score is 0 (every unit dormant), as with
    ReDo's ``score / (mean + 1e-9)``.
    """
    mean = hbar.mean()
    return torch.zeros_like(hbar) if mean == 0 else hbar / mean


def _check_eps(eps: float) -> None:
    if not eps >= 0.0:
        raise PlasticError(f"the dormancy threshold eps must be >= 0, got {eps}")


def dormant_mask(acts: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Bool (n_units,): unit i is dormant if s_i = hbar_i / mean_k hbar_k <= eps, hbar_i = mean |h_i|.

    acts is (..., n_units), e.g. an MLP's GeLU output (B, T, 4d). Score-based, so it is valid for
    GeLU, where "dormant" means "contributes little", not "exactly zero" (a test like h == 0 is
    meaningless there). Sokar et al. 2023 (ReDo, arXiv 2302.12902); eps = 0.01 on MLP hidden units
    as in arXiv 2606.24752 (ReDo uses 0.1 or 0.025).
    """
    _check_eps(eps)
    return unit_scores(mean_abs_per_unit(acts)) <= eps


def dormant_fraction(acts: torch.Tensor, eps: float = 0.01) -> float:
    """Fraction of dormant units of one layer (``dormant_mask``). Pool layers as count / total."""
    return dormant_mask(acts, eps).double().mean().item()


def pooled_fraction(masks) -> float:
    """Units flagged over all layers / all units (count / total, the spec's pooled dormancy)."""
    masks = list(masks)
    total = sum(m.numel() for m in masks)
    if total == 0:
        raise PlasticError("pooled_fraction needs at least one layer with at least one unit")
    return sum(int(m.sum()) for m in masks) / total


def grama_mask(grads: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Bool (n_units,): GraMa-inactive units. g_i = mean over tokens of |dL/dz_i|, z the
    pre-activation; inactive if g_i / mean_k g_k <= eps.

    Liu et al. 2025, "Measure gradients, not activations!" (GraMa, arXiv 2505.24061): the gradient
    magnitude measures a unit's capacity to learn, where activations measure what it expresses.
    grads is (..., n_units), e.g. the gradient w.r.t. an MLP's fc output (B, T, 4d). The default
    eps equals the activation test's so the two fractions are comparable.
    """
    _check_eps(eps)
    return unit_scores(mean_abs_per_unit(grads)) <= eps


def grama_fraction(grads: torch.Tensor, eps: float = 0.01) -> float:
    """Fraction of GraMa-inactive units of one layer (``grama_mask``)."""
    return grama_mask(grads, eps).double().mean().item()


# --------------------------------------------------------------------------------------------
# Attention entropy
# --------------------------------------------------------------------------------------------


def _check_query_start(query_start: int, n_queries: int) -> None:
    if not 0 <= query_start < n_queries:
        raise PlasticError(f"query_start must be in [0, {n_queries}) for {n_queries} query positions, "
                           f"got {query_start}")


def attention_entropy(probs: torch.Tensor, query_start: int = 0) -> torch.Tensor:
    """Mean attention entropy per head: -sum_k p log p (0 log 0 = 0), averaged over the batch and
    the query positions q >= query_start. Nats, float64.

    probs is (B, H, Tq, Tk) attention weights (rows sum to 1; masked keys have p = 0) and returns
    (H,); or (B, Tq, Tk) for one head and returns a 0-dim tensor. arXiv 2606.24752 averages over
    query positions 256..2047 of 2048-token sequences. Materialises nothing beyond ``probs``; for
    long sequences use ``attention_entropy_from_qk``.
    """
    if not isinstance(probs, torch.Tensor) or probs.dim() not in (3, 4):
        raise PlasticError("attention_entropy needs probabilities of shape (B, H, Tq, Tk) or (B, Tq, Tk), got "
                           f"{tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__}")
    _check_query_start(query_start, probs.shape[-2])
    p = probs.detach()[..., query_start:, :].to(torch.float64)
    per_query = -torch.special.xlogy(p, p).sum(-1)
    if probs.dim() == 3:
        return per_query.mean()
    return per_query.transpose(0, 1).reshape(probs.shape[1], -1).mean(1)


def max_attention_entropy(seq_len: int, query_start: int = 0) -> float:
    """H_max = mean over query positions q in [query_start, seq_len) of ln(q + 1), the entropy of
    uniform attention over the q + 1 keys a causal query sees (arXiv 2606.24752)."""
    _check_query_start(query_start, seq_len)
    return math.fsum(math.log(q + 1) for q in range(query_start, seq_len)) / (seq_len - query_start)


class HeadClasses(NamedTuple):
    """Bool masks over heads: lazy (near-uniform attention) and collapsed (near one key)."""

    lazy: torch.Tensor
    collapsed: torch.Tensor


def lazy_collapsed(entropy: torch.Tensor, h_max: float, lazy: float = 0.9, collapsed: float = 0.1) -> HeadClasses:
    """Lazy if H > lazy * H_max, collapsed if H < collapsed * H_max (arXiv 2606.24752: 0.9 and 0.1)."""
    if not 0.0 <= collapsed <= lazy:
        raise PlasticError(f"lazy_collapsed needs 0 <= collapsed <= lazy, got collapsed={collapsed}, lazy={lazy}")
    entropy = torch.as_tensor(entropy)
    return HeadClasses(entropy > lazy * h_max, entropy < collapsed * h_max)


def split_qkv(qkv_BTC: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, H, T, K) from the output of a block's ``attn.qkv`` linear (B, T, 3 H K), laid out
    as in plasticlm.model.CausalSelfAttention (channels = [q | k | v], each head-major)."""
    B, T, C = qkv_BTC.shape
    if C % (3 * n_head):
        raise PlasticError(f"qkv output has {C} channels, not a multiple of 3 * n_head = {3 * n_head}")
    qkv = qkv_BTC.view(B, T, 3, n_head, C // (3 * n_head))
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def _chunk_entropy(q_BCK: torch.Tensor, k_BSK: torch.Tensor, start: int, scale: float) -> torch.Tensor:
    """Entropy (B, C) of causal softmax attention for the queries at positions start..start+C-1,
    given the keys 0..S-1 with S = start + C. -sum p log p on log-probabilities (not
    logsumexp - sum p s, which loses float32 digits to cancellation on sharp heads)."""
    C, S = q_BCK.shape[1], k_BSK.shape[1]
    scores = torch.matmul(q_BCK, k_BSK.transpose(1, 2)).mul_(scale)  # (B, C, S)
    hidden = torch.arange(S, device=scores.device) > torch.arange(start, start + C, device=scores.device)[:, None]
    logp = torch.log_softmax(scores.masked_fill_(hidden, float("-inf")), dim=-1).masked_fill_(hidden, 0.0)
    return -(logp.exp() * logp).sum(-1)


def attention_entropy_from_qk(q: torch.Tensor, k: torch.Tensor, query_start: int = 0, chunk: int = 256,
                              scale: float | None = None) -> torch.Tensor:
    """``attention_entropy`` of causal softmax(q k^T * scale) per head, computed without the full
    (B, H, T, T) tensor: one head and one block of ``chunk`` queries at a time, so peak extra memory
    is a few (B, chunk, T) tensors. q, k are (B, H, T, K) (see ``split_qkv``); scale defaults to
    1 / sqrt(K) as in scaled_dot_product_attention. Returns float64 (H,), nats (arXiv 2606.24752).
    """
    if q.dim() != 4 or q.shape != k.shape:
        raise PlasticError(f"q and k must both be (B, H, T, K), got {tuple(q.shape)} and {tuple(k.shape)}")
    if chunk < 1:
        raise PlasticError(f"chunk must be >= 1, got {chunk}")
    B, H, T, K = q.shape
    _check_query_start(query_start, T)
    scale = 1.0 / math.sqrt(K) if scale is None else scale
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.zeros(H, dtype=torch.float64)
    with torch.no_grad():
        for h in range(H):
            q_h, k_h = q[:, h].to(dtype), k[:, h].to(dtype)
            for start in range(query_start, T, chunk):
                stop = min(start + chunk, T)
                ent = _chunk_entropy(q_h[:, start:stop], k_h[:, :stop], start, scale)
                out[h] += ent.to(torch.float64).sum().cpu()
    return out / (B * (T - query_start))


# --------------------------------------------------------------------------------------------
# Parameters, features, gradients
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Norms:
    """A global L2 norm and its parts (per tensor or per block); total^2 = sum of parts^2."""

    total: float
    parts: dict[str, float]


def _norms(named: dict[str, torch.Tensor]) -> Norms:
    parts = {n: torch.linalg.vector_norm(t.detach().to(torch.float64)).item() for n, t in named.items()}
    return Norms(math.sqrt(math.fsum(v * v for v in parts.values())), parts)


def non_embedding_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of the non-embedding parameters: the model's own list when it defines one
    (plasticlm GPT: everything under ``blocks.``), else every parameter under ``blocks.``."""
    if hasattr(model, "non_embedding_named_parameters"):
        named = list(model.non_embedding_named_parameters())
    else:
        named = [(n, p) for n, p in model.named_parameters() if n.startswith("blocks.")]
    if not named:
        raise PlasticError(f"{type(model).__name__} has no non-embedding parameters (nothing under 'blocks.')")
    return named


def mean_abs_param(model: nn.Module) -> float:
    """mean |theta| over all non-embedding parameters, weights and biases pooled (one mean over
    every element, not a mean of per-tensor means). Dohare et al. 2024; arXiv 2606.24752.
    Excludes token embedding (tied head), position embedding and the final LayerNorm (arXiv:2606.24752, "Models")."""
    named = non_embedding_parameters(model)
    total = math.fsum(p.detach().to(torch.float64).abs().sum().item() for _, p in named)
    return total / sum(p.numel() for _, p in named)


def param_norms(model: nn.Module) -> Norms:
    """||theta||_2 per parameter tensor (tied tensors once) and over all of them (Plasticine; Kumar et al.)."""
    return _norms(dict(model.named_parameters()))


def drift_from_init(model: nn.Module, init_state: Mapping[str, torch.Tensor]) -> Norms:
    """||theta - theta_0||_2 per parameter tensor and over all of them; init_state maps parameter
    names to the initial tensors (e.g. a copy of model.state_dict() taken at step 0).
    Kumar et al. 2023 (L2 Init, arXiv 2308.11958); Plasticine."""
    diffs, problems = {}, []
    for name, p in model.named_parameters():
        if name not in init_state:
            problems.append(f"{name} is missing")
        elif tuple(init_state[name].shape) != tuple(p.shape):
            problems.append(f"{name} has shape {tuple(init_state[name].shape)}, the model {tuple(p.shape)}")
        else:
            diffs[name] = p.detach().to(torch.float64) - init_state[name].detach().to(p.device, torch.float64)
    if problems:
        raise PlasticError("init_state does not match the model (save it with model.state_dict() at step 0): "
                           + "; ".join(problems))
    return _norms(diffs)


def feature_norm(h: torch.Tensor) -> float:
    """Mean over tokens of ||h(x)||_2; h is (..., d) (Plasticine)."""
    if h.dim() < 1 or h.numel() == 0:
        raise PlasticError(f"feature_norm needs a non-empty (..., d) tensor, got {tuple(h.shape)}")
    return torch.linalg.vector_norm(h.detach().to(torch.float64), dim=-1).mean().item()


def _group(name: str) -> str:
    """'blocks.3.attn.qkv.weight' -> 'blocks.3'; 'wte.weight' -> 'wte'."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" and len(parts) > 2 else parts[0]


def grad_norm(model: nn.Module) -> Norms:
    """Global ||grad||_2 over every parameter with a gradient, and one norm per block ('blocks.3')
    and per other top-level module ('wte', 'wpe', 'ln_f'). Read after backward, before the
    optimizer step; parameters without .grad are skipped. Standard (diagnostics spec)."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            groups.setdefault(_group(name), []).append(p.grad.detach().to(torch.float64).flatten())
    if not groups:
        raise PlasticError("grad_norm: no parameter has a gradient; call it after loss.backward()")
    return _norms({g: torch.cat(ts) for g, ts in groups.items()})


def qkv_head_norms(model: nn.Module) -> dict[str, torch.Tensor]:
    """Frobenius norm of each head's Q, K and V weight rows: {'blocks.i.attn': (3, n_head)} with
    rows q, k, v. The qkv weight (3 H K, d) holds q, k, v blocks, each head-major (model.py).
    Biases are excluded. A head whose Q or K norm collapses cannot sharpen its attention."""

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, CausalSelfAttention):
            w = m.qkv.weight.detach().to(torch.float64).view(3, m.n_head, m.head_dim, -1)
            out[name] = torch.linalg.vector_norm(w, dim=(2, 3))
    if not out:
        raise PlasticError(f"{type(model).__name__} has no plasticlm CausalSelfAttention modules")
    return out


def layernorm_gain_stats(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per LayerNorm (incl. ln_f): mean, std, min and max of its gain (weight) and mean |bias|.
    Listed by issue 15 beside the parameter statistics: with normalisation, parameter scale sets
    the effective learning rate (Lyle et al. 2024, arXiv 2407.01800), and the gains are the scale
    the next layer sees."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm) and m.weight is not None:
            g = m.weight.detach().to(torch.float64)
            stats = {"mean": g.mean().item(), "std": g.std(unbiased=False).item(),
                     "min": g.min().item(), "max": g.max().item()}
            if m.bias is not None:
                stats["bias_mean_abs"] = m.bias.detach().to(torch.float64).abs().mean().item()
            out[name] = stats
    return out


# --------------------------------------------------------------------------------------------
# Sharpness
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopEigenvalue:
    """Result of power iteration: the eigenvalue estimate, iterations run, and whether the
    relative change fell below tol before ``iters`` ran out."""

    value: float
    iters: int
    converged: bool


def _default_loss(model: nn.Module, batch) -> torch.Tensor:
    return model(*batch) if isinstance(batch, tuple | list) else model(batch)


def _normalised(vs: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = torch.sqrt(sum((v * v).sum() for v in vs))
    return [v / norm for v in vs]


def _hvp(grads, params: list[torch.Tensor], v: list[torch.Tensor]) -> list[torch.Tensor]:
    """H v by differentiating <grad, v>; a gradient that is None (parameter unused) or constant
    (loss linear in it) contributes a zero row."""
    pairs = [(g, u) for g, u in zip(grads, v) if g is not None and g.requires_grad]
    if not pairs:
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad([g for g, _ in pairs], params, grad_outputs=[u for _, u in pairs],
                             retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for p, h in zip(params, hv)]


def hessian_top_eigenvalue(model: nn.Module, batch, iters: int = 20, tol: float = 1e-3, seed: int = 0,
                           loss_fn: Callable[[nn.Module, object], torch.Tensor] | None = None) -> TopEigenvalue:
    """Top (largest-magnitude) eigenvalue of the Hessian of the loss on one fixed batch, by power
    iteration on Hessian-vector products (double backward). Sharpness, as analysed by Lyle et al.
    2023 (arXiv 2303.01486); the PyHessian recipe (Yao et al. 2020, arXiv 1912.07145).

    loss = loss_fn(model, batch), by default model(*batch) (plasticlm GPT: batch = (idx, targets)).
    The start vector is drawn from a generator seeded with ``seed``, so the result is deterministic.
    Stops when |lam_t - lam_{t-1}| <= tol * |lam_t|. The value is a Rayleigh quotient, so its sign
    is kept (away from a minimum the largest-magnitude eigenvalue may be negative). The model's
    parameters, .grad fields and train/eval mode are left unchanged; call it in eval mode.
    Attention runs on the math SDPA kernel, the one with a double backward on every device.
    """
    if iters < 1 or tol < 0:
        raise PlasticError(f"hessian_top_eigenvalue needs iters >= 1 and tol >= 0, got {iters}, {tol}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise PlasticError("hessian_top_eigenvalue: the model has no parameters that require grad")
    gen = torch.Generator().manual_seed(seed)
    v = _normalised([torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params])
    with sdpa_kernel(SDPBackend.MATH):
        loss = (loss_fn or _default_loss)(model, batch)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        lam_prev = None
        for it in range(1, iters + 1):
            hv = _hvp(grads, params, v)
            lam = sum((a * b).sum() for a, b in zip(hv, v)).item()
            if lam_prev is not None and abs(lam - lam_prev) <= tol * abs(lam):
                return TopEigenvalue(lam, it, True)
            if all(not h.any() for h in hv):
                return TopEigenvalue(0.0, it, True)
            v, lam_prev = _normalised([h.detach() for h in hv]), lam
    return TopEigenvalue(lam, iters, False)
