"""Process-group awareness. The model and loop stay single-device code; parallelism is applied from
outside (torchrun + ``torch.distributed``). Until DDP/FSDP2 land, these helpers make logging and
checkpointing rank-aware: only rank 0 writes files, every rank steps the same global stream and
keeps its own rows (``LanguageStream(rank=..., world_size=...)``).
"""

from __future__ import annotations

import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
