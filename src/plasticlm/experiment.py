"""A run as the study runs it: the training loop plus the study's callbacks (probes; diagnostics and
mitigations hook in here as they land). ``train`` stays free of later pipeline stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticlm.config import Config
from plasticlm.probe import ProbeCallback
from plasticlm.train import CallbackSpec, resume, train


def run_callbacks() -> list[CallbackSpec]:
    """The callbacks of a study run: factories built with the trainer, so each reads its config
    (``loop.cfg``) and stream from it."""
    return [ProbeCallback]


def train_run(cfg: Config, run_dir: str | Path, **kw: Any) -> dict[str, Any]:
    extra = kw.pop("callbacks", [])
    return train(cfg, run_dir, callbacks=run_callbacks() + list(extra), **kw)


def resume_run(run_dir: str | Path, **kw: Any) -> dict[str, Any]:
    extra = kw.pop("callbacks", [])
    return resume(run_dir, callbacks=run_callbacks() + list(extra), **kw)
