"""Resetting hidden units and single weights, with the optimizer state of exactly what was reset.

Getting the optimizer state wrong is the most common bug of public implementations (diagnostics
spec, "Mitigations"): moments left in place push a fresh unit straight back to where the old one
was. The helpers here zero Adam's ``exp_avg`` and ``exp_avg_sq`` for the reset entries only. The
``step`` count is reset only where the optimizer keeps one per element (as the AdamGnT of Dohare et
al.'s code does); torch's AdamW keeps one scalar step per tensor, shared by every row, so resetting
it would change the bias correction of all the other units, and it is left alone. Consequence: the
first update of a reset entry under AdamW is (1 - beta1) / sqrt(1 - beta2) times a fresh Adam step
(0.45 at the paper's betas 0.9 / 0.95), then it converges to Adam's usual size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from plasticlm.errors import PlasticError
from plasticlm.model import GPT, param_init

MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
"""Per-element optimizer buffers that a reset zeroes where present (Adam/AdamW, with amsgrad)."""


@torch.no_grad()
def reset_optimizer_entries(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, index) -> None:
    """Zero the optimizer's per-element state of ``param`` at ``index`` (anything that indexes the
    tensor: a row index ``(idx,)``, a column index ``(slice(None), idx)``, a bool mask). A ``step``
    of the parameter's shape is zeroed there too; a scalar step is shared and left alone. A
    parameter without state yet (no step taken, or state reset at a task boundary) has nothing to
    reset."""
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    for key in MOMENT_KEYS:
        buf = state.get(key)
        if isinstance(buf, torch.Tensor) and buf.shape == param.shape:
            buf[index] = 0
    step = state.get("step")
    if isinstance(step, torch.Tensor) and step.shape == param.shape:
        step[index] = 0


@torch.no_grad()
def reset_units(layer_in: nn.Linear, layer_out: nn.Linear, unit_idx: torch.Tensor,
                optimizer: torch.optim.Optimizer | None, generator: torch.Generator, init_std: float) -> None:
    """Re-initialise hidden units ``unit_idx`` between ``layer_in`` (d_in -> n) and ``layer_out``
    (n -> d_out): incoming rows of ``layer_in.weight`` re-drawn from N(0, init_std) with
    ``generator``, their ``layer_in.bias`` entries 0, outgoing columns of ``layer_out.weight`` 0,
    and the optimizer state of exactly those rows, bias entries and columns zeroed. Nothing else is
    touched: other units, ``layer_out.bias``, other parameters, torch's global RNG.

    The rule of Continual Backprop (Dohare et al. 2024, arXiv 2306.13812) and ReDo (Sokar et al.
    2023, arXiv 2302.12902): a fresh unit whose zero outgoing weights leave the network's function
    unchanged at the moment of the reset.
    """
    n = layer_in.weight.shape[0]
    if layer_out.weight.shape[1] != n:
        raise PlasticError(f"reset_units: layer_in has {n} output units but layer_out takes "
                           f"{layer_out.weight.shape[1]} inputs; pass the two linears around one hidden layer")
    idx = torch.as_tensor(unit_idx, dtype=torch.long).flatten().cpu()
    if idx.numel() == 0:
        return
    if int(idx.min()) < 0 or int(idx.max()) >= n or idx.unique().numel() != idx.numel():
        raise PlasticError(f"reset_units: unit indices must be distinct and in [0, {n}), got {idx.tolist()}")
    if init_std < 0:
        raise PlasticError(f"reset_units: init_std must be >= 0, got {init_std}")
    w_in = layer_in.weight
    rows = idx.to(w_in.device)
    fresh = torch.randn((idx.numel(), w_in.shape[1]), generator=generator) * init_std
    w_in[rows] = fresh.to(w_in.device, w_in.dtype)
    reset_optimizer_entries(optimizer, w_in, (rows,))
    if layer_in.bias is not None:
        layer_in.bias[rows] = 0
        reset_optimizer_entries(optimizer, layer_in.bias, (rows,))
    cols = idx.to(layer_out.weight.device)
    layer_out.weight[:, cols] = 0
    reset_optimizer_entries(optimizer, layer_out.weight, (slice(None), cols))


def bias_corrected(util: torch.Tensor, age: torch.Tensor, decay: float) -> torch.Tensor:
    """u / (1 - eta^age) (Adam-style bias correction of a running mean started at 0; Dohare et al. 2024); age 0 -> 0."""
    corr = 1.0 - torch.pow(torch.full_like(util, decay), age.to(util.dtype))
    return torch.where(age > 0, util / corr.clamp_min(torch.finfo(util.dtype).tiny), torch.zeros_like(util))


def select_units(scores: torch.Tensor, age: torch.Tensor, maturity: int, budget: float,
                 rate: float) -> tuple[torch.Tensor, float]:
    """(indices to replace, remaining budget) for one layer (or one flattened weight tensor) after
    its ages were incremented; ``scores`` are the bias-corrected utilities.

    The budget grows by rate * n_eligible (eligible: age > maturity), so it cannot pile up while
    nothing is eligible; its whole part, at most n_eligible, picks the eligible entries with the
    lowest scores.
    """
    eligible = torch.nonzero(age > maturity).flatten()
    budget += rate * eligible.numel()
    k = min(int(math.floor(budget)), eligible.numel())
    if k <= 0:
        return eligible[:0], budget
    budget -= k
    lowest = torch.topk(scores[eligible], k, largest=False, sorted=True).indices
    return eligible[lowest], budget


def mlp_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, mlp) of every block's MLP (``blocks.{i}.mlp``, with ``fc``, ``act`` and ``proj``)."""
    found = False
    for name, module in model.named_modules():
        if name.startswith("blocks.") and name.endswith(".mlp") and hasattr(module, "fc") and hasattr(module, "proj"):
            found = True
            yield name, module
    if not found:
        raise PlasticError(f"{type(model).__name__} has no blocks.{{i}}.mlp modules with fc and proj linears; "
                           "mitigations on hidden units need the plasticlm GPT")


def gpt_of(model: nn.Module) -> GPT:
    """The plasticlm GPT (a DDP or compiled wrapper is unwrapped once)."""
    inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None) or model
    if not isinstance(inner, GPT):
        raise PlasticError(f"mitigations need the plasticlm GPT, got {type(model).__name__}")
    return inner


def init_std(model: nn.Module, param_name: str) -> float:
    """The std of the N(0, std) init of a parameter (0.0 for one initialised to a constant)."""
    kind, value = param_init(gpt_of(model).config, param_name)
    return value if kind == "normal" else 0.0


def block_linear_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, weight) of every linear weight inside the blocks: attn.qkv, attn.proj, mlp.fc, mlp.proj."""
    return [(n, p) for n, p in model.named_parameters()
            if n.startswith("blocks.") and n.endswith(".weight") and p.ndim == 2]
