"""A run as the study runs it: the training loop plus the study's callbacks (probes; diagnostics and
mitigations hook in here as they land). ``train`` stays free of later pipeline stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticlm.config import Config
from plasticlm.probe import ProbeCallback
from plasticlm.train import CallbackSpec, resume, train


def run_callbacks(cfg: Config) -> list[CallbackSpec]:
    """The callbacks of a study run, built with the trainer (``ProbeCallback`` reads its stream)."""
    return [ProbeCallback]


def train_run(cfg: Config, run_dir: str | Path, **kw: Any) -> dict[str, Any]:
    extra = kw.pop("callbacks", [])
    return train(cfg, run_dir, callbacks=run_callbacks(cfg) + list(extra), **kw)


def resume_run(run_dir: str | Path, **kw: Any) -> dict[str, Any]:
    from plasticlm.config import load_config

    extra = kw.pop("callbacks", [])
    cfg = load_config(Path(run_dir) / "config.toml") if (Path(run_dir) / "config.toml").exists() else None
    specs = run_callbacks(cfg) if cfg is not None else []
    return resume(run_dir, callbacks=specs + list(extra), **kw)
