"""Training throughput per preset on the current device (tokens/s, ms/step, peak memory).

Times the training step the loop runs (``step.train_step``: forward/backward with autocast, clip, the
project's AdamW from ``optim.build_optimizer`` with the default recipe) on random tokens, so numbers
track the code. Printed by `plasticlm bench`; never a pass/fail test.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from plasticlm.config import OptimConfig
from plasticlm.model import GPT, configure_cpu, from_preset, non_embedding_params
from plasticlm.optim import build_optimizer
from plasticlm.step import resolve_device, train_step


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_presets(presets: list[str], vocab_size: int = 1024, seq_len: int = 128, batch_size: int = 32,
                  steps: int = 10, device: str = "auto", dtype: str = "float32") -> list[dict]:
    configure_cpu()
    dev = resolve_device(device)
    rows = []
    for name in presets:
        torch.manual_seed(0)
        cfg = from_preset(name, vocab_size=vocab_size, seq_len=seq_len)
        model = GPT(cfg).to(dev)
        optim_cfg = OptimConfig()
        opt = build_optimizer(model, optim_cfg, 1e-3)
        x = np.random.default_rng(0).integers(0, vocab_size, size=(batch_size, seq_len + 1))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for i in range(steps + 2):
            if i == 2:
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
            train_step(model, opt, x[:, :-1], x[:, 1:], micro_batch_size=0, grad_clip=optim_cfg.grad_clip,
                       device=dev, dtype=dtype, step=i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = (time.perf_counter() - t0) / steps
        rows.append({
            "preset": name,
            "non_embedding_params": non_embedding_params(cfg),
            "device": str(dev),
            "dtype": dtype,
            "batch": f"{batch_size}x{seq_len}",
            "ms_per_step": round(dt * 1e3, 2),
            "tokens_per_s": round(batch_size * seq_len / dt),
            "peak_mem_mb": round(_peak_mem_mb(dev), 1),
        })
        del model, opt
    return rows
