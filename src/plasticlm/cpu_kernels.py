"""plasticlm's CPU kernels (``csrc/cpu_kernels.cpp``, AVX2), with autograd: causal attention and GeLU.

Both compute the same function as PyTorch's op to float rounding (the tests compare them with float64)
and exist because PyTorch's CPU kernels were far from their FLOP or memory floor at the micro presets
(README, "Step speed"; measured with batch 16 x 128 on one thread):

- ``causal_attention`` (``model.fused_attention``): ``F.scaled_dot_product_attention``'s CPU flash
  kernel at head dim 16 and T = 128 took about a third of the blocks' time, about 12x its FLOP count;
  with the copies of the q/k/v views and of their gradients, 16-18 ms per layer (forward and backward)
  at the 670K preset, against 6.7 ms here. It reads the qkv projection in the layout the linear layer
  writes, (B, T, 3, H, K), returns (B, T, H, K), which the output projection reads without a copy, and
  writes the gradient of qkv in place of three.
- ``gelu`` (``model.fused_gelu``): the exact GeLU with erf as ATen computes it, forward and backward
  in one pass each, the backward sharing exp(-x^2/2) between Phi and phi: 1.4-1.7 ms against 1.7-2.7 ms
  per layer at 670K (two measurements).

Where they apply (``applies``, ``gelu_applies``): float32 CPU tensors outside autocast and
``torch.compile`` (and head dim 16, 32 or 64 for attention), on an x86-64 CPU with AVX2 and FMA, with
a C++ compiler to build them: the first process on a machine builds the library with
``torch.utils.cpp_extension`` (about 4 s; ``library_path``), later processes load it in milliseconds.
Anywhere else, or if the build fails (one warning, naming the reason), the model uses PyTorch's ops.
With several torch threads, work is split over that many threads (attention by batch rows, GeLU by
elements; each output element is computed by one thread alone, so the result does not depend on the
split). Double backward (``create_graph``, the Hessian diagnostics) recomputes with PyTorch's
differentiable ops.
"""

from __future__ import annotations

import contextlib
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

from plasticlm.cachelock import cache_lock
from plasticlm.runlog import atomic_write_bytes

HEAD_DIMS = (16, 32, 64)
"""Head dims the attention kernel is built for (``csrc/cpu_kernels.cpp``)."""

SOURCE = Path(__file__).parent / "csrc" / "cpu_kernels.cpp"
CFLAGS = ["-O3", "-mavx2", "-mfma", "-fno-math-errno"]
FAILED_NAME = "build-failed.txt"
"""Written beside the library when a build fails (the reason), so that later processes skip the attempt."""


def _cpu_has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def library_path() -> Path:
    """Where the built kernels live: under torch's extension root (``TORCH_EXTENSIONS_DIR``, else
    ``~/.cache/torch_extensions``), in a directory keyed by the source, the flags, torch and Python, so
    that a changed source or another torch builds anew."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch_extensions")
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(CFLAGS).encode(), torch.__version__.encode(),
                                     sys.version.encode(), platform.machine().encode()])).hexdigest()[:16]
    return Path(root) / f"plasticlm_cpu_kernels_{key}" / "plasticlm_cpu_kernels.so"


def build(path: Path) -> None:
    """Build the kernels into ``path`` with ``torch.utils.cpp_extension`` (ninja and the C++ compiler), once
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
    with cache_lock(path.parent / "build.lock", "plasticlm's CPU kernels"):
        if path.exists():
            return  # built by the process we waited for
        work = path.parent / "build"
        work.mkdir(parents=True, exist_ok=True)
        (work / "lock").unlink(missing_ok=True)
        built = cpp_extension.load("plasticlm_cpu_kernels", [str(SOURCE)], extra_cflags=CFLAGS,
                                   build_directory=str(work), is_python_module=False, verbose=False)
        atomic_write_bytes(path, Path(built).read_bytes())
        path.chmod(0o755)  # as a linker writes it (the atomic write's temporary file is private)


def _reason(e: Exception) -> str:
    """The line of a failed build that says why (the compiler's or the shell's words), else the last."""
    lines = [line.strip() for line in str(e).strip().splitlines()] or [""]
    cause = [line for line in lines if "error:" in line or "not found" in line or "No such file" in line]
    return f"{type(e).__name__}: {cause[0] if cause else lines[-1]}"


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernels (built on first use on this machine), or None, with one warning saying why,
    where it cannot be had."""
    if not _cpu_has_avx2():
        return None  # not an x86-64 CPU with AVX2: SDPA, silently (nothing the user can fix)
    path = library_path()
    failed = path.parent / FAILED_NAME
    # an earlier process could not build them: do not try (and wait) again in every process
    why = failed.read_text(encoding="utf-8").strip() if failed.exists() else ""
    if not why and not path.exists():
        try:
            build(path)
        except Exception as e:  # no compiler, no ninja, a read-only cache, a build error: PyTorch's ops instead
            why = _reason(e)
            with contextlib.suppress(OSError):
                atomic_write_bytes(failed, why.encode())
    if not why:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            why = _reason(e)
    if why:
        warnings.warn(f"plasticlm's CPU kernels could not be built ({why}); using PyTorch's attention and GeLU, which "
                      "are slower at small widths. Install a C++ compiler (g++ or clang) and delete "
                      f"{failed} to get them, or set model.fused_attention = false and model.fused_gelu = false to "
                      "silence this.", RuntimeWarning, stacklevel=2)
        return None
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.plasticlm_attention_forward.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, f32, i64, i64]
    lib.plasticlm_attention_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, f32, i64, i64]
    for fn in (lib.plasticlm_attention_forward, lib.plasticlm_attention_backward):
        fn.restype = ctypes.c_int
    lib.plasticlm_gelu_forward.argtypes = [ptr, ptr, i64]
    lib.plasticlm_gelu_backward.argtypes = [ptr, ptr, ptr, i64]
    for fn in (lib.plasticlm_gelu_forward, lib.plasticlm_gelu_backward):
        fn.restype = None
    return lib


def _usable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and library() is not None)


def applies(qkv_BT3HK: torch.Tensor) -> bool:
    """Whether ``causal_attention`` can take this qkv (module docstring); builds the kernels on first use."""
    return qkv_BT3HK.shape[-1] in HEAD_DIMS and _usable(qkv_BT3HK)


def gelu_applies(x: torch.Tensor) -> bool:
    """Whether ``gelu`` can take x (module docstring); builds the kernels on first use."""
    return _usable(x)


@functools.cache
def _pool(threads: int, pid: int) -> ThreadPoolExecutor:
    """Worker threads for ``_split``, per process: a forked child does not inherit its parent's threads."""
    return ThreadPoolExecutor(threads, thread_name_prefix="plasticlm-cpu-kernels")


def _split(n: int, call, min_per_thread: int = 1) -> None:
    """``call(lo, hi)`` over [0, n), in torch's thread count of contiguous pieces (ctypes releases the GIL);
    a non-zero return is an error code of the kernel."""
    threads = max(1, min(torch.get_num_threads(), n // min_per_thread))
    bounds = [n * i // threads for i in range(threads + 1)]
    if threads == 1:
        codes = [call(0, n)]
    else:
        codes = list(_pool(threads, os.getpid()).map(lambda i: call(bounds[i], bounds[i + 1]), range(threads)))
    if any(codes):
        raise RuntimeError(f"plasticlm's CPU kernel failed (code {max(codes)}: 1 = head dim not built, "
                           "2 = out of memory)")


def sdpa_causal_attention(qkv_BT3HK: torch.Tensor) -> torch.Tensor:
    """The same function through ``F.scaled_dot_product_attention``: (B, T, 3, H, K) -> (B, T, H, K). The
    model's attention wherever the kernel does not apply, and the reference the kernel is tested against."""
    q_BHTK, k_BHTK, v_BHTK = qkv_BT3HK.permute(2, 0, 3, 1, 4).unbind(0)
    return F.scaled_dot_product_attention(q_BHTK, k_BHTK, v_BHTK, is_causal=True).transpose(1, 2)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv_BT3HK: torch.Tensor) -> torch.Tensor:
        qkv = qkv_BT3HK.contiguous()
        B, T, _, H, K = qkv.shape
        out_BTHK = qkv.new_empty(B, T, H, K)
        lse_BHT = qkv.new_empty(B, H, T)
        args = (qkv.data_ptr(), out_BTHK.data_ptr(), lse_BHT.data_ptr(), B, T, H, K, 1.0 / math.sqrt(K))
        _split(B, lambda b0, b1: library().plasticlm_attention_forward(*args, b0, b1))
        ctx.save_for_backward(qkv_BT3HK, out_BTHK, lse_BHT)
        return out_BTHK

    @staticmethod
    def backward(ctx, grad_BTHK: torch.Tensor):
        qkv_in, out_BTHK, lse_BHT = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a gradient that is itself differentiable (SDPA's math path)
            with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
                (grad,) = torch.autograd.grad(sdpa_causal_attention(qkv_in), qkv_in, grad_BTHK, create_graph=True)
            return grad
        qkv, grad = qkv_in.contiguous(), grad_BTHK.contiguous()  # no copy for the linear layer's output
        B, T, _, H, K = qkv.shape
        dqkv = torch.empty_like(qkv)
        args = (qkv.data_ptr(), out_BTHK.data_ptr(), lse_BHT.data_ptr(), grad.data_ptr(), dqkv.data_ptr(),
                B, T, H, K, 1.0 / math.sqrt(K))
        _split(B, lambda b0, b1: library().plasticlm_attention_backward(*args, b0, b1))
        return dqkv


def causal_attention(qkv_BT3HK: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(K) + causal mask) v for qkv (B, T, 3, H, K): (B, T, H, K), by the CPU kernel.

    Call only where ``applies(qkv)``; equal to ``sdpa_causal_attention`` to float rounding."""
    return _CausalAttention.apply(qkv_BT3HK)


GELU_MIN_PER_THREAD = 1 << 16
"""Elements per thread below which ``gelu`` does not split a tensor over threads."""


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        xc = x.contiguous()
        y = torch.empty_like(xc)
        px, py = xc.data_ptr(), y.data_ptr()
        _split(xc.numel(), lambda lo, hi: library().plasticlm_gelu_forward(px + 4 * lo, py + 4 * lo, hi - lo),
               GELU_MIN_PER_THREAD)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: through F.gelu's differentiable backward
            with torch.enable_grad():
                return torch.autograd.grad(F.gelu(x), x, grad, create_graph=True)[0]
        xc, gc = x.contiguous(), grad.contiguous()
        dx = torch.empty_like(xc)
        px, pg, pd = xc.data_ptr(), gc.data_ptr(), dx.data_ptr()
        _split(xc.numel(), lambda lo, hi: library().plasticlm_gelu_backward(px + 4 * lo, pg + 4 * lo, pd + 4 * lo,
                                                                           hi - lo), GELU_MIN_PER_THREAD)
        return dx


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GeLU, ``F.gelu(x)``, by the CPU kernel: one pass forward, one backward (erf and exp shared).

    Call only where ``gelu_applies(x)``; equal to ``F.gelu`` to float rounding."""
    return _Gelu.apply(x)
