"""Replay with LR re-warming and re-decaying (Ibrahim et al. 2024, arXiv 2403.08763).

A stream and schedule setting, not a hook: a fraction of each batch's sequences is drawn from the
languages of earlier tasks (``stream.replay_fraction``, implemented by the continual stream), and
at every new language the LR warms up to its peak again and decays with a cosine
(``optim.rewarm_at_task_start = true``, ``optim.schedule = "cosine"``; the cosine floor is
``optim.min_lr_frac``). ``config_overrides()`` names exactly those run-config values; the loop
applies them before it builds the stream and the schedule. Replayed sequences take the place of
fresh ones, so the tokens per step and the FLOPs do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from plasticlm.config import opt
from plasticlm.mitigations.base import Mitigation, MitigationConfig, check_range


@dataclass(frozen=True)
class ReplayConfig(MitigationConfig):
    """Replay of earlier languages, with LR re-warm and re-decay at every new language."""

    fraction: float = opt(0.05, "Fraction of each batch's sequences drawn from earlier languages "
                                "(-> stream.replay_fraction; Ibrahim et al.: 1..25%); 0 = none.")
    lr: Literal["rewarm_cosine", "keep"] = opt("rewarm_cosine", "rewarm_cosine: re-warm to the peak LR and "
                                                                "cosine-decay at every new language; keep: "
                                                                "leave the run's schedule as configured.")

    SUMMARY = "Replay: mix a fraction of earlier languages into each batch; re-warm and re-decay the LR per language"
    CITATION = "Ibrahim et al. 2024, arXiv 2403.08763"
    NOOP = {"fraction": 0.0, "lr": "keep"}
    NOOP_NOTE = "no config value is overridden"

    def validate(self) -> list[str]:
        p: list[str] = []
        check_range(p, "fraction", self.fraction, 0.0, 1.0, hi_open=True)
        return p


class Replay(Mitigation):
    name = "replay"

    def config_overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cfg.fraction > 0:
            out["stream.replay_fraction"] = self.cfg.fraction
        if self.cfg.lr == "rewarm_cosine":
            out["optim.rewarm_at_task_start"] = True
            out["optim.schedule"] = "cosine"
        return out
