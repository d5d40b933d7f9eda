"""Human-readable counts for tables and figures."""

from __future__ import annotations

import math


def si(x: float | None) -> str:
    """1234567 -> '1.23M': token and parameter counts (K, M, B, T, as in '5B tokens'); None/nan -> '-'."""
    if x is None or not math.isfinite(x):
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"
