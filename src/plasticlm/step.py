"""The training step, shared by the training loop, the probe, `plasticlm bench` and `plasticlm plan --cpu`.

One optimizer step is four parts, so that the loop can fire its hooks between them::

    loss = forward_backward(model, x, y, ...)     # gradient of the mean loss, in micro-batches
    grad_norm = clip_gradients(model, grad_clip)  # the pre-clip global norm
    check_finite(loss, grad_norm, step, optimizer)
    optimizer_step(optimizer)

``train_step`` is the four in a row, for code that has no hooks to fire (probe, bench).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch

from plasticlm import dist
from plasticlm.errors import NonFiniteLoss, PlasticError


def resolve_device(name: str) -> torch.device:
    """``train.device``: cpu, cuda, cuda:N, or auto (cuda when available); under torchrun ``cuda``
    means this rank's GPU (``cuda:LOCAL_RANK``)."""
    if name == "auto":
        return dist.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PlasticError(f"train.device = {name!r} but no CUDA device is available: use --set train.device=cpu")
    return dist.local_device(dev)


def resolve_dtype(device: torch.device, dtype: str) -> str:
    """``train.dtype``: float32, bfloat16, or auto = bfloat16 autocast on CUDA (weights, gradients and
    AdamW state stay float32: the master copy) and float32 elsewhere (a CPU has no fast bf16 matmul)."""
    if dtype == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return dtype


def resolve_compile(device: torch.device, setting: str) -> bool:
    """``train.compile``: on, off, or auto = on for CUDA (1.23x the eager bf16 step at 314M, T = 2048 on
    an H200, for about 30 s of compilation) and off on CPU, where it did not pay (README, "Step speed":
    minutes of compilation on the micro presets for no measurable step-time gain)."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def compile_for_training(model: torch.nn.Module, device: torch.device, setting: str) -> torch.nn.Module:
    """The module the training step calls: ``torch.compile(model)`` when ``train.compile`` resolves to
    on, else ``model`` itself. The compiled wrapper shares the parameters; save, evaluate and probe the
    raw model."""
    return torch.compile(model) if resolve_compile(device, setting) else model


def autocast_context(device: torch.device, dtype: str):
    """bf16 autocast for ``train.dtype = "bfloat16"`` (or auto on CUDA); float32 runs without autocast."""
    if resolve_dtype(device, dtype) == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def forward_backward(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, micro_batch_size: int,
                     device: torch.device, dtype: str) -> float:
    """Accumulate the gradient of the mean loss over (x, y) in micro-batches; return the loss.
    A DDP or FSDP model syncs gradients on the last micro-batch only (``dist.grad_sync``)."""
    micro = micro_batch_size or len(x)
    total = None
    for i in range(0, len(x), micro):
        xb = torch.from_numpy(x[i : i + micro]).to(device, non_blocking=True)
        yb = torch.from_numpy(y[i : i + micro]).to(device, non_blocking=True)
        with dist.grad_sync(model, enabled=i + micro >= len(x)):
            with autocast_context(device, dtype):
                loss = model(xb, yb)
                if len(xb) < len(x):  # a micro-batch's share of the mean (x 1.0 would only cost a kernel)
                    loss = loss * (len(xb) / len(x))
            loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return float(total) if total is not None else 0.0


def clip_gradients(model: torch.nn.Module, grad_clip: float) -> float:
    """Clip the global gradient norm to ``grad_clip`` (0 = no clipping); return the pre-clip norm
    (over all shards of an FSDP model)."""
    clip = grad_clip if grad_clip > 0 else float("inf")
    # foreach: one multi-tensor norm and scale (also on CPU); bit-identical to the per-tensor loop there
    return float(dist.full_value(torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)))


def check_finite(loss: float, grad_norm: float, step: int, optimizer: torch.optim.Optimizer) -> None:
    """Refuse a non-finite loss or gradient norm before the weights change (gradients are dropped)."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    optimizer.zero_grad(set_to_none=True)
    raise NonFiniteLoss(
        f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the weights were not "
        "updated and the last good checkpoint is kept. Start a new run with a lower optim.lr or with "
        "optim.grad_clip > 0 (resuming would repeat the same steps exactly)"
    )


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: float, grad_clip: float,
                  step: int) -> float:
    """Clip, refuse non-finite values, step; return the pre-clip gradient norm."""
    grad_norm = clip_gradients(model, grad_clip)
    check_finite(loss, grad_norm, step, optimizer)
    optimizer_step(optimizer)
    return grad_norm


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray, *,
               micro_batch_size: int, grad_clip: float, device: torch.device, dtype: str,
               step: int) -> tuple[float, float]:
    """One optimizer step without hooks; returns (loss, pre-clip gradient norm)."""
    loss = forward_backward(model, x, y, micro_batch_size, device, dtype)
    return loss, clip_and_step(model, optimizer, loss, grad_clip, step)
