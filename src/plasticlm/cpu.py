"""Process-wide CPU settings for training and probing: denormals, threads and glibc's allocator.

None of these changes a result: the same ops run on the same values (flushing denormals aside,
which every plasticlm process does, so runs agree with each other). They change how fast a step
runs on CPU (README, "Step speed").
"""

from __future__ import annotations

import ctypes
import platform
from typing import Literal

import torch

Malloc = Literal["retain", "system"]

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
"""glibc's mallopt parameter numbers (malloc.h)."""
MMAP_THRESHOLD = 32 << 20
"""Blocks up to this size come from the heap, not from a fresh mmap: glibc's largest allowed value on
64-bit (HEAP_MAX_SIZE / 2). A micro preset's largest tensor (the logits, batch x seq x vocab) is 8 MiB."""
TRIM_THRESHOLD = 1 << 30
"""Free memory at the heap's top that glibc keeps instead of returning it to the OS (a step's working
set is freed and allocated again every step)."""
TOP_PAD = 64 << 20
"""Extra heap glibc asks the OS for at a time."""

_retained = False


def retain_freed_memory() -> bool:
    """Keep the memory torch frees for its next allocation, instead of glibc handing it back to the OS.

    With glibc's defaults a CPU training step returns most of its working set at the end of the step
    (tensors above the mmap threshold are unmapped, and the heap's top is trimmed) and faults it back in,
    page by page and zeroed by the kernel, in the next: 2,000-8,000 page faults and 6-22 ms of system
    time per step at the micro presets (batch 16 x 128, one thread), up to a fifth of the step. This sets
    fixed thresholds (``mallopt``) so that the pages stay mapped. It is what tcmalloc or jemalloc under
    LD_PRELOAD do for PyTorch on CPU, without a preload. Resident memory stays at the step's peak
    rather than dropping between steps. Returns False (and does nothing) where the C library is not
    glibc (macOS, musl), whose allocators behave differently.
    """
    global _retained
    if _retained:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in
             ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
    _retained = ok
    return ok


def configure_cpu(threads: int = 0, malloc: Malloc = "retain") -> None:
    """The process settings every plasticlm training, probing and diagnosing process uses on CPU.

    - Flush denormals: with tiny weights a step ran 6x slower without it (data-sources.md).
    - ``threads > 0``: torch's intra-op threads (``train.threads``).
    - ``malloc = "retain"`` (``train.malloc``): keep freed memory mapped (``retain_freed_memory``);
      ``"system"`` leaves the C library's defaults. Process-wide: once retained, a later "system" in
      the same process does not undo it.
    """
    torch.set_flush_denormal(True)
    if threads > 0:
        torch.set_num_threads(threads)
    if malloc == "retain":
        retain_freed_memory()
