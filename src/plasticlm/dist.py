"""Data parallelism applied from outside the model (torchtitan's ``parallelize``): one run on several
processes started by ``torchrun``, with DDP or FSDP2, over gloo (CPU) or NCCL (GPU).

The model file stays single-device code. ``parallelize(model, cfg.dist, device)`` returns what the
loop calls forward/backward on: a ``DistributedDataParallel`` wrapper around the raw model, or the
raw model itself after FSDP2 ``fully_shard`` (per block, then the root, with a mixed-precision
policy; ``fully_shard`` shards the module in place). The trainer keeps both: the raw model for
checkpoints, components and probes, the wrapped one for training steps.

What each rank does (arXiv:2606.24752 trains every run at 256 x 2048 tokens per step; here the
global batch is the same whatever the number of ranks, so a run's trajectory does not depend on it
beyond float rounding):

- every rank steps the same global stream and keeps its own ``B / world_size`` rows
  (``LanguageStream(rank=..., world_size=...)``): no overlap, and the stream state is global, so a
  run resumes exactly on the same or another number of ranks;
- gradients are averaged across ranks once per optimizer step (``grad_sync`` turns the sync off
  for all but the last micro-batch);
- the logged loss is the mean over ranks, and a non-finite loss on any rank is seen by every rank
  in the same all-reduce, so all ranks stop together instead of one raising while the others wait;
- evaluation is split over ranks (``evaluate.sequence_losses_across_ranks``) and gathered, so every
  rank takes part;
- only rank 0 writes files (logs, run.json, the run lock, checkpoints; FSDP's sharded checkpoints are
  the exception: each rank writes its own shard, see ``dist_checkpoint``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from plasticlm.errors import PlasticError

try:  # FSDP2 (torch >= 2.6); older builds train with DDP only
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
except ImportError:  # pragma: no cover - depends on the torch build
    MixedPrecisionPolicy = fully_shard = None

TORCHRUN_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")
"""What torchrun sets next to WORLD_SIZE: without them a WORLD_SIZE is stray, not a process group."""


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def env_world_size() -> int:
    """The world size torchrun announced (``WORLD_SIZE``), 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


# ---------------------------------------------------------------------- process group


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto``: NCCL for CUDA devices, gloo otherwise."""
    if backend != "auto":
        return backend
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(dist_cfg: Any, device: torch.device) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1, or one process started by torchrun
    with a strategy, e.g. FSDP2 on one GPU); a no-op otherwise or when the group exists. Returns True
    when this call created the group (``teardown`` ends it). A ``WORLD_SIZE`` without torchrun's other
    variables is a clear error, not a silent single-process run."""
    if dist.is_available() and dist.is_initialized():
        return False
    if env_world_size() <= 1 and not (dist_cfg.strategy != "none" and "MASTER_ADDR" in os.environ):
        return False
    missing = [k for k in TORCHRUN_VARIABLES if k not in os.environ]
    if missing:
        raise PlasticError(f"WORLD_SIZE = {env_world_size()} but {', '.join(missing)} not set: start the processes "
                           "with torchrun (torchrun --nproc_per_node=N -m plasticlm ...), or unset WORLD_SIZE")
    backend = resolve_backend(dist_cfg.backend, device)
    if backend == "nccl":
        if device.type != "cuda":
            raise PlasticError("dist.backend = 'nccl' needs CUDA devices: use --set dist.backend=gloo on CPU")
        torch.cuda.set_device(local_device(device))
    dist.init_process_group(backend=backend)
    return True


def check_strategy(dist_cfg: Any) -> None:
    """Training on several processes needs a strategy that keeps their weights in step."""
    if world_size() > 1 and dist_cfg.strategy == "none":
        raise PlasticError(
            f"{world_size()} processes (torchrun) but dist.strategy = 'none': each process would train its "
            "own unsynchronised copy. Pass --set dist.strategy=ddp (or fsdp), or run one process"
        )
    if dist_cfg.strategy == "fsdp" and fully_shard is None:
        raise PlasticError(f"dist.strategy = 'fsdp' needs FSDP2 (torch >= 2.6), this is torch {torch.__version__}: "
                           "upgrade torch or use --set dist.strategy=ddp")


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun every rank takes its own GPU (``cuda:LOCAL_RANK``) unless one was named, also a lone
    rank (``--nproc_per_node=1``), whose NCCL set-up needs an indexed device (seen on an H200)."""
    if device.type == "cuda" and device.index is None and (env_world_size() > 1 or "LOCAL_RANK" in os.environ):
        return torch.device("cuda", local_rank())
    return device


def comm_device() -> torch.device:
    """Where tensors for collectives live: CUDA for NCCL, CPU for gloo."""
    if world_size() > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------- parallelize


def active_strategy(dist_cfg: Any) -> str:
    """``dist.strategy`` when a process group is up (torchrun), else ``none``."""
    return dist_cfg.strategy if dist.is_available() and dist.is_initialized() else "none"


def parallelize(model: torch.nn.Module, dist_cfg: Any, device: torch.device) -> torch.nn.Module:
    """What the loop trains: the model itself (one process or ``strategy = none``), a DDP wrapper of
    it, or the model sharded in place by FSDP2 (``fully_shard`` on every block, then the root, with
    ``MixedPrecisionPolicy(param_dtype, reduce_dtype)``; master weights stay float32). Call it before
    the optimizer is built: FSDP2 replaces the parameters by their shards."""
    strategy = active_strategy(dist_cfg)
    if strategy == "none":
        return model
    if strategy == "ddp":
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if strategy == "fsdp":  # FSDP2 available: the Trainer ran check_strategy before
        mesh = init_device_mesh(device.type, (world_size(),))
        mp = MixedPrecisionPolicy(param_dtype=getattr(torch, dist_cfg.param_dtype),
                                  reduce_dtype=getattr(torch, dist_cfg.reduce_dtype))
        for block in model.blocks:  # the GPT's stable submodule names (model.py)
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    raise PlasticError(f"dist.strategy = {strategy!r}: use none, ddp or fsdp")


def is_sharded(model: torch.nn.Module) -> bool:
    """True when the model's parameters are FSDP2 shards (DTensors)."""
    return any(isinstance(p, DTensor) for p in model.parameters())


@contextmanager
def grad_sync(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Gradient all-reduce on (the last micro-batch of a step) or off (the others): DDP ``no_sync``,
    FSDP2 ``set_requires_gradient_sync``; nothing for a plain module. A ``torch.compile`` wrapper is
    looked through (``_orig_mod``)."""
    model = getattr(model, "_orig_mod", model)
    if enabled:
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif is_sharded(model) and hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (e.g. the total gradient norm of sharded parameters), else ``t``."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def full_model(model: torch.nn.Module, build: Callable[[], torch.nn.Module], device: torch.device,
               full_state: Callable[[torch.nn.Module], dict[str, torch.Tensor]]) -> torch.nn.Module:
    """A single-device module with the full weights: ``model`` itself unless it is sharded, else a
    copy built by ``build()`` and filled from ``full_state(model)`` (collective: every rank calls it).
    Building the copy runs under a forked RNG, so the training RNG is untouched."""
    if not is_sharded(model):
        return model
    state = full_state(model)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        copy = build().to(device)
    copy.load_state_dict(state)
    copy.train(model.training)
    return copy


# ---------------------------------------------------------------------- collectives on values


def mean_across_ranks(value: float) -> float:
    """The mean of ``value`` over ranks; NaN on every rank when it is non-finite on any rank (one
    all-reduce of [sum, non-finite flag], so every rank raises at the same step)."""
    if world_size() == 1:
        return value
    finite = math.isfinite(value)
    t = torch.tensor([value if finite else 0.0, 0.0 if finite else 1.0], dtype=torch.float64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float("nan") if t[1].item() > 0 else t[0].item() / world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_gather_tensor(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``t`` (same shape on every rank), in rank order, on the CPU."""
    if world_size() == 1:
        return [t.cpu()]
    t = t.to(comm_device())
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return [p.cpu() for p in parts]
