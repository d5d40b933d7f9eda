"""Validation on fixed held-out sequences: loss (nats/token) and bits per byte.

Cross-language losses are compared in bits per byte, since the tokenizer compresses languages
differently (nanochat): bpb = loss / ln 2 / (bytes per token of that language).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from plasticlm import dist
from plasticlm.step import autocast_context


def fixed_windows(tokens: np.ndarray, n: int, seq_len: int) -> np.ndarray:
    """``n`` windows of ``seq_len + 1`` tokens at evenly spaced, fixed offsets (same every call)."""
    last = len(tokens) - (seq_len + 1)
    if last < 0:
        raise ValueError(f"{len(tokens)} tokens are fewer than one sequence of {seq_len + 1}")
    starts = np.linspace(0, last, num=n).astype(np.int64) if n > 1 else np.zeros(1, np.int64)
    return np.stack([np.asarray(tokens[s : s + seq_len + 1]) for s in starts]).astype(np.int64)


@torch.no_grad()
def sequence_losses(model: torch.nn.Module, windows: np.ndarray, batch_size: int, device: torch.device,
                    dtype: str = "float32") -> np.ndarray:
    """Mean next-token loss (nats) of each window, shape (n,). Runs in eval mode, restores the mode."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(windows), batch_size):
            w = torch.from_numpy(windows[i : i + batch_size]).to(device)
            with autocast_context(device, dtype):
                logits = model(w[:, :-1])
            loss = F.cross_entropy(logits.float().transpose(1, 2), w[:, 1:], reduction="none")
            out.append(loss.mean(dim=1).double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


def sequence_losses_across_ranks(model: torch.nn.Module, windows: np.ndarray, batch_size: int,
                                 device: torch.device, dtype: str = "float32") -> np.ndarray:
    """``sequence_losses`` split over torchrun ranks (one process: exactly ``sequence_losses``): rank r
    scores windows [r n', (r + 1) n') (n' = ceil(n / world), the last rank padded with repeats so that
    every rank makes the same forward calls, which a sharded model needs), then every rank gathers
    the whole result in window order."""
    world = dist.world_size()
    if world == 1:
        return sequence_losses(model, windows, batch_size, device, dtype)
    n = len(windows)
    per = -(-n // world)
    idx = np.minimum(np.arange(dist.rank() * per, (dist.rank() + 1) * per), n - 1)
    mine = torch.from_numpy(sequence_losses(model, windows[idx], batch_size, device, dtype))
    return torch.cat(dist.all_gather_tensor(mine)).numpy()[:n]


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    return loss_nats / math.log(2) / bytes_per_token
