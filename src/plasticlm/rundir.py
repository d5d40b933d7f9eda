"""The run directory: what a run writes, where, and the bookkeeping around it.

Layout (stable; `plasticlm report`, `probe`, `diagnose`, `export` and other tools read it)::

    RUN_DIR/
      config.toml        the resolved config
      run.json           status, code version (git commit), package versions, wall time, summary
      metrics.jsonl      one JSON row per log event: step, tokens, task_index (0-based index of the task
                         being trained; -1 before training), cycle, lang + metrics
      probes.jsonl       one row per plasticity probe (when probes run); its task_index counts the
                         task instances trained before the probe (probe.py)
      probes/            per-sequence probe losses, one .npz per probe point
      checkpoints/       task-NNNNNN/ {model.safetensors, optim.pt (or dcp/ under FSDP), rng.pt,
                         components.pt, meta.json}, latest
      logs/train.log     human-readable log
      .lock              held by the process writing the run (runlock.py)

Components (components/) may add JSONL logs of their own next to metrics.jsonl; the loop keeps their
row counts in each checkpoint, so a resume rolls them back with metrics.jsonl.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plasticlm import dist
from plasticlm.config import Config, dumps_toml
from plasticlm.errors import PlasticError
from plasticlm.runlock import LOCK_NAME
from plasticlm.runlog import atomic_write_json, atomic_write_text, environment_info, read_json


def update_run_json(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into RUN_DIR/run.json (written atomically, by rank 0 alone under torchrun: the
    other ranks get {})."""
    if not dist.is_main():
        return {}
    path = Path(run_dir) / "run.json"
    info = read_json(path) if path.exists() else {}
    info.update(fields)
    atomic_write_json(path, info)
    return info


def run_status(run_dir: Path) -> str:
    """The status in a run's run.json ("missing" without one, "created" without a status)."""
    path = run_dir / "run.json"
    return read_json(path).get("status", "created") if path.exists() else "missing"


def check_new_run_dir(run_dir: str | Path, overwrite: bool = False) -> None:
    """A new run may not land on an existing one unless ``overwrite``; only a plasticlm run directory
    (config.toml and run.json) is ever replaced."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        return
    if not overwrite:
        raise PlasticError(
            f"run directory {run_dir} already holds a run: continue it with `plasticlm resume {run_dir}`, "
            "choose another --run-dir, or pass --overwrite to start again"
        )
    if not (run_dir / "run.json").exists():
        raise PlasticError(
            f"{run_dir} has a config.toml but no run.json: it does not look like a plasticlm run directory, "
            "so --overwrite will not delete it; choose another --run-dir"
        )


def init_run_dir(run_dir: str | Path, cfg: Config, overwrite: bool = False) -> Path:
    """Create a fresh run directory with the resolved config and environment info."""
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir, overwrite)
    if (run_dir / "config.toml").exists():
        for child in run_dir.iterdir():  # all but the lock file this process holds (runlock.py)
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            elif child.name != LOCK_NAME:
                child.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    atomic_write_text(run_dir / "config.toml", dumps_toml(cfg))
    atomic_write_json(run_dir / "run.json", {"status": "created", **environment_info()})
    return run_dir


@contextmanager
def file_logging(run_dir: Path) -> Iterator[None]:
    """Mirror the ``plasticlm`` loggers into RUN_DIR/logs/train.log while the block runs (rank 0 only)."""
    if not dist.is_main():
        yield
        return
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "logs" / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("plasticlm")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What a resume must find unchanged: the tokenizer and, per training language, the token shard
    (its sha256 from the data manifest where there is one, else its length)."""
    manifest = getattr(data, "manifest", None) or {}
    langs = manifest.get("languages", {})
    return {
        "tokenizer": (manifest.get("tokenizer") or {}).get("hash"),
        "train": {lang: (langs.get(lang, {}).get("train") or {}).get("sha256") or len(arr)
                  for lang, arr in sorted(data.train.items())},
    }
