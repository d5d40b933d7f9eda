"""The GPT of arXiv:2606.24752: a pre-LN decoder-only transformer, its size presets and its counts.

Architecture (arXiv:2606.24752, "Models"): LayerNorm with bias before attention and before the MLP,
GeLU MLP with expansion 4, learned absolute position embeddings, token embedding tied with the
output head, biases in every linear layer, causal scaled-dot-product attention, head dim 64.

Shape legend for tensor names: B batch, T time (sequence), D d_model, H heads, K head dim,
V vocabulary.

Initialisation (GPT-2 / nanoGPT convention):
| parameter                          | init                         |
|------------------------------------|------------------------------|
| wte (tied lm_head), wpe            | N(0, init_std)               |
| attn.qkv, mlp.fc weights           | N(0, init_std)               |
| attn.proj, mlp.proj weights        | N(0, init_std / sqrt(2 L))   |
| all linear biases                  | 0                            |
| LayerNorm weight / bias            | 1 / 0                        |

The residual projections are scaled by depth so that the residual stream's variance does not grow
with the number of blocks. Stable submodule names for hooks: ``blocks.{i}.attn``,
``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``, ``blocks.{i}.mlp.fc``, ``blocks.{i}.mlp.act``,
``blocks.{i}.mlp.proj``, ``blocks.{i}.ln_1``, ``blocks.{i}.ln_2``, ``ln_f``.

The model holds no data, logging, distributed or probe code: those attach from outside.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from plasticlm import cpu_kernels
from plasticlm.errors import PlasticError
from plasticlm.presets import MICRO_HEAD_DIM, MICRO_PRESETS, PAPER_HEAD_DIM, PAPER_PRESETS, preset_names


@dataclass(frozen=True)
class GPTConfig:
    """Concrete dimensions of one GPT."""

    n_layer: int
    d_model: int
    n_head: int
    head_dim: int = 64
    vocab_size: int = 1024
    seq_len: int = 128
    init_std: float = 0.02
    gelu: str = "exact"
    fused_loss: bool = True
    fused_attention: bool = True
    fused_gelu: bool = True

    @property
    def attn_dim(self) -> int:
        return self.n_head * self.head_dim


def from_preset(name: str, vocab_size: int = 1024, seq_len: int = 128, **kw) -> GPTConfig:
    """A named size (the paper's eight, or the CPU micro ladder)."""
    if name in PAPER_PRESETS:
        n_layer, d_model, n_head = PAPER_PRESETS[name]
        head_dim = PAPER_HEAD_DIM
    elif name in MICRO_PRESETS:
        n_layer, d_model, n_head = MICRO_PRESETS[name]
        head_dim = MICRO_HEAD_DIM
    else:
        lower = {n.lower(): n for n in preset_names()}
        close = difflib.get_close_matches(name.lower(), list(lower), n=1)
        hint = f" (did you mean {lower[close[0]]!r}?)" if close else ""
        raise PlasticError(f"unknown preset {name!r}{hint}; known presets: {', '.join(preset_names())}")
    return GPTConfig(n_layer, d_model, n_head, head_dim, vocab_size, seq_len, **kw)


def from_depth(depth: int, aspect: int = 80, head_dim: int = 64, vocab_size: int = 1024,
               seq_len: int = 128, **kw) -> GPTConfig:
    """The depth dial (nanochat style): width = depth * aspect, rounded to a multiple of head_dim."""
    if depth <= 0 or aspect <= 0 or head_dim <= 0:
        raise PlasticError(f"from_depth needs positive depth/aspect/head_dim, got {depth}/{aspect}/{head_dim}")
    n_head = max(1, round(depth * aspect / head_dim))
    return GPTConfig(depth, n_head * head_dim, n_head, head_dim, vocab_size, seq_len, **kw)


def build_gpt_config(section, vocab_size: int) -> GPTConfig:
    """Resolve the config's ``model`` section (preset, depth dial or explicit dims) to a GPTConfig."""
    vocab = section.vocab_size or vocab_size
    extra = dict(init_std=section.init_std, gelu=section.gelu, fused_loss=section.fused_loss,
                 fused_attention=section.fused_attention, fused_gelu=section.fused_gelu)
    if section.depth > 0:
        return from_depth(section.depth, section.aspect, section.head_dim, vocab, section.seq_len, **extra)
    if section.preset:
        return from_preset(section.preset, vocab, section.seq_len, **extra)
    n_head = section.n_head or max(1, section.d_model // section.head_dim)
    return GPTConfig(section.n_layer, section.d_model, n_head, section.head_dim, vocab, section.seq_len,
                     **extra)


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


def block_params(c: GPTConfig) -> int:
    """Exact parameter count inside the blocks (equals the module's numel).

    Per block with A = n_head * head_dim: qkv d*3A + 3A, attn proj A*d + d, MLP 4d^2 + 4d and
    4d^2 + d, two LayerNorms 4d; with A = d this is 12 d^2 + 13 d.
    """
    d, a = c.d_model, c.attn_dim
    per_block = (d * 3 * a + 3 * a) + (a * d + d) + (8 * d * d + 5 * d) + 4 * d
    return c.n_layer * per_block


def non_embedding_params(c: GPTConfig) -> int:
    """The non-embedding count of arXiv:2606.24752: 12 L d^2 + 14 L d (for A = d).

    This is the x-axis of the scaling law and reproduces the paper's published size table exactly
    (5M = 4,933,120 ... 314M = 314,859,520). Note: the paper itemises the counted tensors
    (q/k/v/out and MLP weights with biases, both block LayerNorms), and those sum to
    12 L d^2 + 13 L d, which is ``block_params`` (the module's real numel). The published counts
    carry one more d per block; we keep the paper's convention for comparability (the gap, L*d,
    is at most 0.03% of any preset) and state it here and in the README.
    """
    return block_params(c) + c.n_layer * c.d_model


def total_params(c: GPTConfig) -> int:
    """All unique parameters (the module numel): blocks, tied token embedding, positions, final LN."""
    return block_params(c) + c.vocab_size * c.d_model + c.seq_len * c.d_model + 2 * c.d_model


def flops_per_token(c: GPTConfig) -> int:
    """Training FLOPs per token: 6 N + 12 L H K T (Kaplan et al. 2020; nanoGPT's MFU estimate).

    N counts the matmul parameters a token passes through: the blocks plus the (tied) output head,
    vocab * d_model. The attention term covers QK^T and AV over the full context T (no causal
    discount), forward and backward.
    """
    n = block_params(c) + c.vocab_size * c.d_model
    return 6 * n + 12 * c.n_layer * c.n_head * c.head_dim * c.seq_len


def param_init(c: GPTConfig, name: str) -> tuple[str, float]:
    """How parameter ``name`` (as in ``GPT.named_parameters``) is initialised: ("normal", std) for
    N(0, std), or ("constant", value). The table of the module docstring: embeddings, attn.qkv and
    mlp.fc weights N(0, init_std); attn.proj and mlp.proj weights N(0, init_std / sqrt(2 L));
    linear biases 0; LayerNorm weight 1 and bias 0."""
    parts = name.split(".")
    if len(parts) < 2 or parts[-1] not in ("weight", "bias"):
        raise PlasticError(f"{name!r} is not a parameter name of the plasticlm GPT (e.g. 'blocks.0.mlp.fc.weight')")
    module, leaf = parts[-2], parts[-1]
    if module in ("ln_1", "ln_2", "ln_f"):
        return ("constant", 1.0 if leaf == "weight" else 0.0)
    if leaf == "bias":
        return ("constant", 0.0)
    if module == "proj":  # attn.proj and mlp.proj: the residual projections
        return ("normal", c.init_std / math.sqrt(2 * c.n_layer))
    return ("normal", c.init_std)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim, self.fused = c.n_head, c.head_dim, c.fused_attention
        self.qkv = nn.Linear(c.d_model, 3 * c.attn_dim, bias=True)
        self.proj = nn.Linear(c.attn_dim, c.d_model, bias=True)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        qkv_BT3HK = self.qkv(x_BTD).view(B, T, 3, self.n_head, self.head_dim)
        if self.fused and cpu_kernels.applies(qkv_BT3HK):  # model.fused_attention: CPU kernel, same function
            y_BTHK = cpu_kernels.causal_attention(qkv_BT3HK)
        else:  # F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y_BTHK = cpu_kernels.sdpa_causal_attention(qkv_BT3HK)
        return self.proj(y_BTHK.reshape(B, T, self.n_head * self.head_dim))


class GELU(nn.GELU):
    """``nn.GELU``; the exact one on CPU by plasticlm's kernel (``model.fused_gelu``, same function)."""

    def __init__(self, approximate: str, fused: bool):
        super().__init__(approximate=approximate)
        self.fused = fused and approximate == "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and cpu_kernels.gelu_applies(x):
            return cpu_kernels.gelu(x)
        return super().forward(x)


class MLP(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(c.d_model, 4 * c.d_model, bias=True)
        self.act = GELU("tanh" if c.gelu == "tanh" else "none", c.fused_gelu)
        self.proj = nn.Linear(4 * c.d_model, c.d_model, bias=True)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x_BTD)))


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.d_model, bias=True)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c.d_model, bias=True)
        self.mlp = MLP(c)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        x_BTD = x_BTD + self.attn(self.ln_1(x_BTD))
        return x_BTD + self.mlp(self.ln_2(x_BTD))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, bias=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embedding
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The init of the table in the module docstring (deterministic given torch's RNG).

        Draws in ``named_parameters`` order (the tied lm_head once, as wte); ``param_init`` says
        what each parameter gets, so that mitigations re-drawing weights use the same distribution.
        """
        for name, p in self.named_parameters():
            kind, value = param_init(self.config, name)
            if kind == "normal":
                nn.init.normal_(p, 0.0, value)
            else:
                nn.init.constant_(p, value)

    def non_embedding_named_parameters(self):
        """(name, tensor) for the parameters counted as non-embedding (inside the blocks)."""
        return [(n, p) for n, p in self.named_parameters() if n.startswith("blocks.")]

    def forward(self, idx_BT: torch.Tensor, targets_BT: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) when targets is None, else the mean next-token cross-entropy (nats)."""
        B, T = idx_BT.shape
        if self.config.seq_len < T:
            raise PlasticError(f"sequence of {T} tokens exceeds model.seq_len = {self.config.seq_len}")
        pos_T = torch.arange(T, device=idx_BT.device)
        x_BTD = self.wte(idx_BT) + self.wpe(pos_T)
        for block in self.blocks:
            x_BTD = block(x_BTD)
        h_BTD = self.ln_f(x_BTD)
        if targets_BT is None:
            return self.lm_head(h_BTD)
        h_ND, targets_N = h_BTD.view(B * T, -1), targets_BT.reshape(B * T)
        if self.config.fused_loss and h_ND.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
            return linear_cross_entropy(h_ND, self.lm_head.weight, targets_N)
        return F.cross_entropy(self.lm_head(h_ND).float(), targets_N)


UNDERFLOW_P = 1e-30
"""Below this softmax probability of the target, -log p loses precision (float32 underflows near
1e-38, and to 0 with flushed denormals): those rows take the exact log-sum-exp path instead."""


LOSS_CHUNK_ELEMENTS = 1 << 18
"""Logits computed at a time by ``linear_cross_entropy``: 256 rows of a 1,024-token vocabulary (1 MiB),
which stay in a core's cache between the matmul, the softmax and the gradient's two matmuls."""


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the logits h W^T, with the gradients for h and W computed in the same pass.

    Row chunk by row chunk: logits = h_c W^T, p = softmax(logits), the loss -log p[target], then
    g = p - onehot (in place) and grad_h_c = g W, grad_W += g^T h_c. The full logits are never stored.
    The backward scales the two saved gradients by the incoming gradient / N. A double backward
    (create_graph, the Hessian diagnostics) recomputes with differentiable ops instead."""

    @staticmethod
    def forward(ctx, h_ND: torch.Tensor, w_VD: torch.Tensor, targets_N: torch.Tensor, with_grads: bool):
        N, V = len(targets_N), w_VD.shape[0]
        need_h, need_w = with_grads and ctx.needs_input_grad[0], with_grads and ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h_ND) if need_h else None
        grad_w = torch.zeros_like(w_VD) if need_w else None
        nll_N = h_ND.new_empty(N)
        rows = max(16, LOSS_CHUNK_ELEMENTS // V)
        for i in range(0, N, rows):
            h_CD, t_C1 = h_ND[i : i + rows], targets_N[i : i + rows, None]
            logits_CV = h_CD @ w_VD.t()
            p_CV = torch.softmax(logits_CV, dim=-1)
            p_target_C = p_CV.gather(1, t_C1).squeeze(1)
            nll_C = nll_N[i : i + rows]
            torch.log(p_target_C, out=nll_C).neg_()
            small_C = p_target_C < UNDERFLOW_P
            if bool(small_C.any()):  # a confidently wrong row: the exact path for it alone
                r = small_C.nonzero().squeeze(1)
                nll_C[r] = torch.logsumexp(logits_CV[r], dim=-1) - logits_CV[r, t_C1[r, 0]]
            if need_h or need_w:
                g_CV = p_CV.scatter_add_(1, t_C1, p_CV.new_full((len(t_C1), 1), -1.0))  # p - onehot
                if need_h:
                    torch.mm(g_CV, w_VD, out=grad_h[i : i + rows])
                if need_w:
                    grad_w.addmm_(g_CV.t(), h_CD)
        ctx.save_for_backward(h_ND, w_VD, targets_N)
        ctx.grads = (grad_h, grad_w)
        return nll_N.mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h_ND, w_VD, targets_N = ctx.saved_tensors
        scale = grad / len(targets_N)
        if torch.is_grad_enabled():  # create_graph: differentiable in h, W and the incoming gradient
            p_NV = torch.softmax(h_ND @ w_VD.t(), dim=-1)
            g_NV = (p_NV * scale).scatter_add(1, targets_N[:, None], (-scale).expand(len(targets_N), 1))
            return g_NV @ w_VD, g_NV.t() @ h_ND, None, None
        grad_h, grad_w = ctx.grads
        if (ctx.needs_input_grad[0] and grad_h is None) or (ctx.needs_input_grad[1] and grad_w is None):
            raise RuntimeError("linear_cross_entropy: the loss was computed without gradients (under no_grad)")
        return (grad_h * scale if grad_h is not None else None, grad_w * scale if grad_w is not None else None,
                None, None)


def linear_cross_entropy(h_ND: torch.Tensor, w_VD: torch.Tensor, targets_N: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(h_ND @ w_VD.T, targets_N)`` (mean, no ignore index) to float rounding, faster on CPU.

    The loss head of ``model.fused_loss`` (README "Step speed"). On CPU at the micro presets (width
    16..96, vocabulary 1,024) the output projection and the loss were a third of a training step:
    torch's cross-entropy goes through log_softmax, several times slower there than softmax, and the
    8 MiB logits of a 16 x 128 batch leave the cache between the matmul, the loss and the backward's
    two matmuls. This computes the loss from one softmax pass and both gradients (p - onehot) W and
    (p - onehot)^T h in the same pass, in row chunks that stay in cache (``LOSS_CHUNK_ELEMENTS``). Rows
    whose target probability underflows (below ``UNDERFLOW_P``) take the exact log-sum-exp path, so
    the loss stays finite and exact where F.cross_entropy's is. Without grad mode (evaluation) only
    the loss is computed.
    """
    with_grads = torch.is_grad_enabled() and (h_ND.requires_grad or w_VD.requires_grad)
    return _LinearCrossEntropy.apply(h_ND, w_VD, targets_N, with_grads)
