"""Human-readable counts for tables and figures, and the way back (``parse_count``)."""

from __future__ import annotations

import math
from typing import Any


def num(x: Any, fmt: str = ".3g") -> str:
    """A number for tables and text: ``format(x, fmt)``, '-' for None and non-finite values."""
    if x is None or not math.isfinite(float(x)):
        return "-"
    return format(float(x), fmt)


def si(x: float | None) -> str:
    """1234567 -> '1.23M': token and parameter counts (K, M, B, T, as in '5B tokens'); None/nan -> '-'."""
    if x is None or not math.isfinite(x):
        return "-"
    if abs(x) >= 1e15:  # beyond T: plain scientific notation, not '3.1e+03T'
        return f"{x:.3g}"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


GPU_PEAK_TFLOPS: dict[str, float] = {
    "h100": 989.0,
    "h200": 989.0,
    "a100": 312.0,
    "l40s": 362.0,
    "mi300x": 1307.0,
    "b200": 2250.0,
}
"""Dense bf16 tensor-core peak per GPU in TFLOP/s, from the vendors' data sheets (plan.py's docstring);
used by `plan` and `bench`."""


def gpu_peak_tflops(device_name: str) -> tuple[str, float] | None:
    """(key, TFLOP/s) of ``GPU_PEAK_TFLOPS`` whose key is in a device name such as 'NVIDIA H200', else None."""
    name = device_name.lower().replace(" ", "")
    for key, tflops in GPU_PEAK_TFLOPS.items():
        if key in name:
            return key, tflops
    return None


_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str) -> float:
    """'27M' -> 27e6, '1.8T' -> 1.8e12, '5e9' -> 5e9, '1_000' -> 1000: counts as people write them
    (K, M, B or G, T, case-insensitive, as ``si`` prints them). Raises ``ValueError`` otherwise."""
    t = text.strip().replace("_", "")
    scale = _SUFFIX.get(t[-1:].lower()) if t else None
    if scale is not None:
        t = t[:-1]
    value = float(t)  # ValueError for anything else (float() also accepts 'inf'/'nan': callers check)
    return value * scale if scale is not None else value
