"""Checkpoints at task boundaries: complete or absent, never half-written.

Layout of one checkpoint (``RUN_DIR/checkpoints/task-000007/``)::

    model.safetensors   weights (the tied lm_head is stored once, as wte)
    optim.pt            optimizer state_dict (torch.save)
    rng.pt              torch CPU (and CUDA) RNG states
    meta.json           resolved config, step, tokens, task and cycle, stream state, callback states,
                        log row counts, package and torch versions, git commit

A checkpoint is written into a hidden temporary directory and renamed into place; then the
``checkpoints/latest`` pointer (a text file with the checkpoint's name) is replaced atomically. A
kill at any moment leaves ``latest`` naming a complete checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from plasticlm.errors import PlasticError
from plasticlm.runlog import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json


def checkpoint_name(task_index: int) -> str:
    """Name of the checkpoint taken after task ``task_index`` (0-based) completed."""
    return f"task-{task_index:06d}"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    d = checkpoints_dir(run_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("task-") and (p / "meta.json").exists())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = checkpoints_dir(run_dir) / "latest"
    if pointer.exists():
        path = checkpoints_dir(run_dir) / pointer.read_text().strip()
        if (path / "meta.json").exists():
            return path
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def find_checkpoint(run_dir: str | Path, ident: str | None = None) -> Path:
    """The checkpoint named ``ident`` (``task-000007`` or a 0-based task index such as ``7``), or the
    latest one when ``ident`` is None; a PlasticError lists the saved ones when it is not there."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise PlasticError(f"{run_dir} is not a run directory (no config.toml); give a directory written by "
                           "`plasticlm train`")
    if ident is None:
        path = latest_checkpoint(run_dir)
        if path is None:
            raise PlasticError(f"{run_dir} has no complete checkpoint yet: train (or resume) it past a task boundary")
        return path
    name = checkpoint_name(int(ident)) if str(ident).isdigit() else str(ident)
    path = checkpoints_dir(run_dir) / name
    if not (path / "meta.json").exists():
        known = ", ".join(p.name for p in list_checkpoints(run_dir)) or "none"
        raise PlasticError(f"{run_dir}: no checkpoint {ident!r} (give a name like task-000007 or a 0-based task "
                           f"index); saved: {known}")
    return path


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(run_dir: str | Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    meta: dict[str, Any]) -> Path:
    """Write a complete checkpoint directory atomically and move ``latest`` to it."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    for stale in root.glob(".tmp-*"):  # left by a save that was killed (one writer per run directory)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    _fsync(tmp / "model.safetensors")
    atomic_write_bytes(tmp / "optim.pt", _torch_bytes(optimizer.state_dict()))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    atomic_write_bytes(tmp / "rng.pt", _torch_bytes(rng))
    atomic_write_json(tmp / "meta.json", meta)
    if final.exists():  # a resumed run re-reaching a boundary: replace the old copy
        trash = root / f".old-{name}-{os.getpid()}"
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    _fsync(tmp)
    os.replace(tmp, final)
    _fsync(root)
    atomic_write_text(root / "latest", name + "\n")
    return final


def _fsync(path: Path) -> None:
    """Flush a file or a directory entry to disk (durability across power loss, not only kills)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Load weights (and optimizer state and RNG) in place; return meta.json."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise PlasticError(f"{path} is not a complete checkpoint (no meta.json)")
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to wte
    if missing or unexpected:
        raise PlasticError(f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}")
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optim.pt", weights_only=True))
    if restore_rng:
        rng = torch.load(path / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return read_json(path / "meta.json")


def prune_checkpoints(run_dir: str | Path, keep_last: int, pinned: set[str]) -> list[str]:
    """Delete all but the last ``keep_last`` checkpoints and the ``pinned`` ones; return deleted names."""
    found = list_checkpoints(run_dir)
    keep = {p.name for p in found[-keep_last:]} if keep_last > 0 else set()
    latest = latest_checkpoint(run_dir)
    if latest is not None:
        keep.add(latest.name)
    deleted = []
    for p in found:
        if p.name not in keep and p.name not in pinned:
            shutil.rmtree(p, ignore_errors=True)
            deleted.append(p.name)
    return deleted


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over the model's tensors (names sorted): equal hashes = bit-identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
