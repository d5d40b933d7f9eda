"""Training throughput per preset on the current device: tokens/s, ms/step, MFU and peak memory.

Times the training step the loop runs (``step.train_step`` on ``step.compile_for_training``'s module:
forward/backward with the resolved autocast, clip, the non-finite check, the project's AdamW from
``optim.build_optimizer`` with the default recipe) on random tokens, so numbers track the code.

MFU = ``model.flops_per_token`` (the FLOPs accounting of ``plan``: 6 N + 12 L H K T per token) x
tokens/s over a stated peak: on CUDA the data-sheet dense bf16 peak of a known device
(``units.GPU_PEAK_TFLOPS``), else a measured bf16 matmul; on CPU a measured float32 matmul on the
configured threads. Each row names its peak (``peak_source``). Printed by `plasticlm bench`; never a
pass/fail test.

Under torchrun, ``strategy = "ddp"`` or ``"fsdp"`` times the same step on the model that
``dist.parallelize`` wraps, as a training run would: each rank takes its slice of the global batch,
tokens/s counts the global batch, and MFU divides by the peak of all ranks together.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from plasticlm import dist
from plasticlm.config import DistConfig, OptimConfig
from plasticlm.cpu import configure_cpu
from plasticlm.errors import PlasticError
from plasticlm.model import GPT, flops_per_token, from_preset, non_embedding_params
from plasticlm.optim import build_optimizer
from plasticlm.step import compile_for_training, resolve_compile, resolve_device, resolve_dtype, train_step
from plasticlm.units import gpu_peak_tflops


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024, reps: int = 5) -> float:
    """Measured matmul FLOP/s on ``device`` (CPU: the current torch threads): the best of ``reps``
    n x n products (2 n^3 FLOPs each), after one warm-up."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0:
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def cpu_matmul_peak() -> float:
    """Measured float32 matmul FLOP/s on this CPU with the current torch threads."""
    return matmul_peak(torch.device("cpu"))


def device_peak(device: torch.device) -> tuple[float, str]:
    """(FLOP/s, where the number comes from) for MFU on ``device``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        known = gpu_peak_tflops(name)
        if known is not None:
            return known[1] * 1e12, f"data-sheet dense bf16 peak of {name} ({known[1]:g} TFLOP/s)"
        flops = matmul_peak(device, torch.bfloat16, n=8192)
        return flops, f"measured bf16 8192^3 matmul on {name} ({flops / 1e12:.1f} TFLOP/s)"
    flops = cpu_matmul_peak()
    return flops, (f"measured float32 1024^3 matmul on {torch.get_num_threads()} CPU thread(s) "
                   f"({flops / 1e9:.1f} GFLOP/s)")


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; the process's peak RSS


def bench_presets(presets: list[str], vocab_size: int = 1024, seq_len: int = 128, batch_size: int = 32,
                  steps: int = 10, device: str = "auto", dtype: str = "auto", compile: str = "auto",
                  threads: int = 0, strategy: str = "none") -> list[dict]:
    """One row per preset; ``dtype``, ``compile`` and ``strategy`` as ``train.dtype``, ``train.compile`` and
    ``dist.strategy`` (ddp or fsdp under torchrun; module docstring)."""
    configure_cpu(threads)
    dev = resolve_device(device)
    dist_cfg = DistConfig(strategy=strategy)
    if strategy != "none" and not dist.init_from_env(dist_cfg, dev):
        raise PlasticError(f"bench --strategy {strategy} times several processes: start it with torchrun, e.g. "
                           f"torchrun --nproc_per_node=2 -m plasticlm bench --strategy {strategy}")
    dist.check_strategy(dist_cfg)
    world, rank = dist.world_size(), dist.rank()
    if batch_size % world:
        raise PlasticError(f"batch size {batch_size} does not split over {world} ranks: pass a multiple of {world}")
    local = batch_size // world
    peak, peak_source = device_peak(dev)
    rows = []
    for name in presets:
        torch.manual_seed(0)
        cfg = from_preset(name, vocab_size=vocab_size, seq_len=seq_len)
        model = GPT(cfg).to(dev)
        step_model = compile_for_training(dist.parallelize(model, dist_cfg, dev), dev, compile)
        optim_cfg = OptimConfig()
        opt = build_optimizer(model, optim_cfg, 1e-3)
        x = np.random.default_rng(0).integers(0, vocab_size, size=(batch_size, seq_len + 1))
        x = x[rank * local : (rank + 1) * local]  # this rank's slice of the global batch
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for i in range(steps + 2):
            if i == 2:  # after 2 warm-up steps (and the compilation, when on)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                dist.barrier()
                t0 = time.perf_counter()
            train_step(step_model, opt, x[:, :-1], x[:, 1:], micro_batch_size=0, grad_clip=optim_cfg.grad_clip,
                       device=dev, dtype=dtype, step=i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dist.barrier()
        dt = (time.perf_counter() - t0) / steps
        tokens_per_s = batch_size * seq_len / dt
        rows.append({
            "preset": name,
            "non_embedding_params": non_embedding_params(cfg),
            "device": str(dev),
            "dtype": resolve_dtype(dev, dtype),
            "compile": resolve_compile(dev, compile),
            "strategy": strategy,
            "world_size": world,
            "optimizer": optim_cfg.impl,
            "batch": f"{batch_size}x{seq_len}",
            "ms_per_step": round(dt * 1e3, 2),
            "tokens_per_s": round(tokens_per_s),
            "flops_per_token": flops_per_token(cfg),
            "mfu": round(flops_per_token(cfg) * tokens_per_s / (peak * world), 4),
            "peak_flops": peak,
            "peak_source": peak_source,
            "peak_mem_mb": round(_peak_mem_mb(dev), 1),  # this rank's (rank 0's in the CLI's output)
        })
        del model, step_model, opt
    return rows
