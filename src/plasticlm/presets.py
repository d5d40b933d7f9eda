"""The size presets: the paper's ladder and a CPU micro ladder, as (layers, width, heads).

Plain tables, no torch: the config checks preset names without loading the model (model.py builds
them).
"""

from __future__ import annotations

# The paper's ladder (arXiv:2606.24752, size table): layers x width as reconstructed, head dim 64, d/L ~ 80.
PAPER_PRESETS: dict[str, tuple[int, int, int]] = {
    "5M": (4, 320, 5),
    "12M": (5, 448, 7),
    "27M": (7, 576, 9),
    "39M": (8, 640, 10),
    "53M": (9, 704, 11),
    "83M": (10, 832, 13),
    "106M": (11, 896, 14),
    "314M": (16, 1280, 20),
}
PAPER_HEAD_DIM = 64

# A CPU micro ladder: fixed aspect d/L = 16 and fixed head dim 16 across the ladder, so that, as in
# the paper's ladder, width and depth grow together and only the head count changes per head size.
# The ladder spans 204x in non-embedding parameters (3K..670K, the paper's spans 64x), which is
# enough for a power-law fit, while the largest still trains at tens of thousands of tokens/s on
# 2 CPU cores with a 1,024-token vocabulary (README, "Model sizes").
MICRO_PRESETS: dict[str, tuple[int, int, int]] = {
    "3K": (1, 16, 1),
    "25K": (2, 32, 2),
    "85K": (3, 48, 3),
    "200K": (4, 64, 4),
    "390K": (5, 80, 5),
    "670K": (6, 96, 6),
}
MICRO_HEAD_DIM = 16


def preset_names() -> list[str]:
    return list(MICRO_PRESETS) + list(PAPER_PRESETS)
