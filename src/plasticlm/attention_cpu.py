"""Causal self-attention on CPU by plasticlm's own kernel (``csrc/attention_cpu.cpp``), with autograd.

The attention of ``model.fused_attention`` (README "Step speed"). At the CPU micro presets (head dim 16,
T = 128) ``F.scaled_dot_product_attention``'s CPU flash kernel took about a third of the blocks' time,
about 12x its FLOP count, and with the copies of the q/k/v views and their gradients about 17 ms per
layer at the 670K preset (batch 16 x 128, one thread); this kernel takes about 8 ms there. It computes
the same function to float rounding (the tests compare it with SDPA: outputs and gradients within
1e-5 relative), reads the qkv projection in the layout the linear layer writes it, (B, T, 3, H, K),
returns (B, T, H, K), which the output projection reads without a copy, and writes the gradient of
qkv in place of three.

Where it applies (``applies``): float32 CPU tensors outside autocast and ``torch.compile``, head dim 16,
32 or 64, an x86-64 CPU with AVX2 and FMA, and a C++ compiler to build it with: the first use in a
process on a machine builds it with ``torch.utils.cpp_extension`` (about 4 s; ``library_path``) and
later processes load it in milliseconds. Anywhere else, or if
the build fails (one warning, naming the reason), the model uses SDPA. With several torch threads a
batch is split over that many threads (the kernel works on one (batch, head) at a time, so the
result does not depend on the split). Double backward (``create_graph``, the Hessian diagnostics)
recomputes the attention with differentiable ops.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from plasticlm.runlock import cache_lock
from plasticlm.runlog import atomic_write_bytes

HEAD_DIMS = (16, 32, 64)
"""Head dims the kernel is built for (``csrc/attention_cpu.cpp``)."""

SOURCE = Path(__file__).parent / "csrc" / "attention_cpu.cpp"
CFLAGS = ["-O3", "-mavx2", "-mfma", "-fno-math-errno"]


def _cpu_has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def library_path() -> Path:
    """Where the built kernel lives: under torch's extension root (``TORCH_EXTENSIONS_DIR``, else
    ``~/.cache/torch_extensions``), in a directory keyed by the source, the flags, torch and Python, so
    that a changed source or another torch builds anew."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch_extensions")
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(CFLAGS).encode(), torch.__version__.encode(),
                                     sys.version.encode(), platform.machine().encode()])).hexdigest()[:16]
    return Path(root) / f"plasticlm_attention_cpu_{key}" / "plasticlm_attention_cpu.so"


def build(path: Path) -> None:
    """Build the kernel into ``path`` with ``torch.utils.cpp_extension`` (ninja and the C++ compiler), once
    per machine: under a ``flock`` that dies with its holder, the finished library copied into place
    atomically. (torch's own build lock is a file that a process killed mid-build leaves behind, after
    which every later build waits forever; holding ours, nobody else builds there, so a left-over one is
    stale and removed.)"""
    import torch.utils.cpp_extension as cpp_extension

    if shutil.which("ninja") is None:  # torch builds extensions with ninja; the pip package ships one
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
    with cache_lock(path.parent / "build.lock", "plasticlm's CPU attention kernel"):
        if path.exists():
            return  # built by the process we waited for
        work = path.parent / "build"
        work.mkdir(parents=True, exist_ok=True)
        (work / "lock").unlink(missing_ok=True)
        built = cpp_extension.load("plasticlm_attention_cpu", [str(SOURCE)], extra_cflags=CFLAGS,
                                   build_directory=str(work), is_python_module=False, verbose=False)
        atomic_write_bytes(path, Path(built).read_bytes())


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel (built on first use on this machine), or None, with one warning saying why,
    where it cannot be had."""
    if not _cpu_has_avx2():
        return None  # not an x86-64 CPU with AVX2: SDPA, silently (nothing the user can fix)
    try:
        path = library_path()
        if not path.exists():
            build(path)
        lib = ctypes.CDLL(str(path))
    except Exception as e:  # no compiler, no ninja, a read-only cache, a build error: SDPA instead
        lines = str(e).strip().splitlines() or [""]
        why = next((line.strip() for line in lines if "error:" in line), lines[-1].strip())  # the compiler's
        warnings.warn(f"plasticlm's CPU attention kernel could not be built ({type(e).__name__}: {why}); using "
                      "F.scaled_dot_product_attention, which is slower at small head dims. Install a C++ compiler "
                      "(g++ or clang) to get it, or set model.fused_attention = false to silence this.",
                      RuntimeWarning, stacklevel=2)
        return None
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.plasticlm_attention_forward.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, f32, i64, i64]
    lib.plasticlm_attention_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, f32, i64, i64]
    for fn in (lib.plasticlm_attention_forward, lib.plasticlm_attention_backward):
        fn.restype = ctypes.c_int
    return lib


def applies(qkv_BT3HK: torch.Tensor) -> bool:
    """Whether ``causal_attention`` can take this qkv (module docstring); builds the kernel on first use."""
    return (qkv_BT3HK.device.type == "cpu" and qkv_BT3HK.dtype == torch.float32
            and qkv_BT3HK.shape[-1] in HEAD_DIMS and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and library() is not None)


@functools.cache
def _pool(threads: int, pid: int) -> ThreadPoolExecutor:
    """Worker threads for ``_run``, per process: a forked child does not inherit its parent's threads."""
    return ThreadPoolExecutor(threads, thread_name_prefix="plasticlm-attention")


def _run(fn, args: tuple, B: int) -> None:
    """``fn(*args, b0, b1)`` over the batch, split over torch's thread count (ctypes releases the GIL)."""
    threads = min(torch.get_num_threads(), B)
    bounds = [B * i // threads for i in range(threads + 1)]
    if threads <= 1:
        codes = [fn(*args, 0, B)]
    else:
        codes = list(_pool(threads, os.getpid()).map(lambda i: fn(*args, bounds[i], bounds[i + 1]), range(threads)))
    if any(codes):
        raise RuntimeError(f"plasticlm's CPU attention kernel failed (code {max(codes)}: 1 = head dim not built, "
                           "2 = out of memory)")


def sdpa_reference(qkv_BT3HK: torch.Tensor) -> torch.Tensor:
    """The same function through ``F.scaled_dot_product_attention``: (B, T, 3, H, K) -> (B, T, H, K)."""
    q_BHTK, k_BHTK, v_BHTK = qkv_BT3HK.permute(2, 0, 3, 1, 4).unbind(0)
    return F.scaled_dot_product_attention(q_BHTK, k_BHTK, v_BHTK, is_causal=True).transpose(1, 2)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv_BT3HK: torch.Tensor) -> torch.Tensor:
        qkv = qkv_BT3HK.contiguous()
        B, T, _, H, K = qkv.shape
        out_BTHK = qkv.new_empty(B, T, H, K)
        lse_BHT = qkv.new_empty(B, H, T)
        _run(library().plasticlm_attention_forward,
             (qkv.data_ptr(), out_BTHK.data_ptr(), lse_BHT.data_ptr(), B, T, H, K, 1.0 / math.sqrt(K)), B)
        ctx.save_for_backward(qkv_BT3HK, qkv, out_BTHK, lse_BHT)
        return out_BTHK

    @staticmethod
    def backward(ctx, grad_BTHK: torch.Tensor):
        qkv_in, qkv, out_BTHK, lse_BHT = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a gradient that is itself differentiable (SDPA's math path)
            with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
                (grad,) = torch.autograd.grad(sdpa_reference(qkv_in), qkv_in, grad_BTHK, create_graph=True)
            return grad
        grad = grad_BTHK.contiguous()
        B, T, _, H, K = qkv.shape
        dqkv = torch.empty_like(qkv)
        _run(library().plasticlm_attention_backward,
             (qkv.data_ptr(), out_BTHK.data_ptr(), lse_BHT.data_ptr(), grad.data_ptr(), dqkv.data_ptr(),
              B, T, H, K, 1.0 / math.sqrt(K)), B)
        return dqkv


def causal_attention(qkv_BT3HK: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(K) + causal mask) v for qkv (B, T, 3, H, K): (B, T, H, K), by the CPU kernel.

    Call only where ``applies(qkv)``; equal to ``sdpa_reference`` to float rounding."""
    return _CausalAttention.apply(qkv_BT3HK)
