"""Checkpoints at task boundaries: complete or absent, never half-written.

Layout of one checkpoint (``RUN_DIR/checkpoints/task-000007/``)::

    model.safetensors   weights (the tied lm_head is stored once, as wte)
    optim.pt            optimizer state_dict (torch.save)
    rng.pt              torch CPU (and CUDA) RNG states
    components.pt       the loop components' states (torch.save: they may hold tensors, e.g. a
                        mitigation's utilities, initial weights and generator)
    meta.json           resolved config, step, tokens, task and cycle, stream state, the components'
                        random-stream counters, log row counts, package and torch versions, git commit

An FSDP run writes ``dcp/`` (torch.distributed.checkpoint shards, every rank its own) instead of
model.safetensors and optim.pt, and rng.pt holds every rank's state (``dist_checkpoint.py``: formats
and topologies); meta.json's ``dist`` records the strategy, the number of ranks and the format.

Checkpoints written before components.pt kept the components' states in meta.json ("components",
earlier "callbacks"); ``load_component_states`` reads either.

A checkpoint is written into a hidden temporary directory and renamed into place; then the
``checkpoints/latest`` pointer (a text file with the checkpoint's name) is replaced atomically. A
kill at any moment leaves ``latest`` naming a complete checkpoint. A write that fails (a full disk)
removes the temporary directory and raises ``CheckpointError``: the previous checkpoint, ``latest``
and the logs are untouched.

Integrity: meta.json records the sha256 and size of every other file (``files``, the ``dcp/``
shards too) and the sha256 of its own contents (``meta_sha256``, over the canonical JSON without
that field). Loading verifies them and names the damaged file; ``latest_valid_checkpoint`` (used
by resume) skips a damaged checkpoint, with a warning, for the previous intact one.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from plasticlm import dist_checkpoint
from plasticlm.dist import is_sharded
from plasticlm.errors import CheckpointError, CheckpointWarning, PlasticError
from plasticlm.runlog import as_json, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

CHECKSUMMED = ("model.safetensors", "optim.pt", "rng.pt", "components.pt")
"""The files of a checkpoint whose sha256 meta.json records (a sharded checkpoint: those present, and
every file under ``dcp/``)."""
LEGACY_FILES = ("model.safetensors", "optim.pt", "rng.pt")
"""The files of a checkpoint written before meta.json recorded checksums (and before components.pt)."""


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
                    meta: dict[str, Any], components: dict[str, Any] | None = None, *,
                    write_state: Callable[[Path], None] | None = None, rng: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint directory atomically and move ``latest`` to it; ``components``
    (the loop components' states: tensors, numbers, strings, lists and dicts) goes to components.pt.
    ``write_state(tmp)`` replaces the weights and optimizer files (FSDP's sharded state,
    ``dist_checkpoint.stage_sharded``); ``rng`` replaces this process's RNG state (every rank's, under
    torchrun: ``dist_checkpoint.gathered_rng``).

    Raises ``CheckpointError`` naming the file when a write fails (e.g. ENOSPC); the temporary
    directory is removed and the previous checkpoint and ``latest`` are left as they were."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    # Left by a save that was killed (one writer per run directory): its temporary directory, the old
    # copy of a checkpoint it was replacing (``latest`` never names it), a half-written pointer.
    for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(".latest.*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    current = "the checkpoint directory"
    try:
        tmp.mkdir()
        if write_state is None:
            current = "model.safetensors"
            save_model(model, str(tmp / current))
            _fsync(tmp / current)
            current = "optim.pt"
            atomic_write_bytes(tmp / current, _torch_bytes(optimizer.state_dict()))
        else:
            current = dist_checkpoint.SHARDED_DIR
            write_state(tmp)
        if rng is None:
            rng = dist_checkpoint.process_rng()
        current = "rng.pt"
        atomic_write_bytes(tmp / current, _torch_bytes(rng))
        current = "components.pt"
        atomic_write_bytes(tmp / current, _torch_bytes(components or {}))
        current = "meta.json"
        atomic_write_json(tmp / current, with_checksums(meta, tmp))
        if final.exists():  # a resumed run re-reaching a boundary: replace the old copy
            trash = root / f".old-{name}-{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(root)
        current = "latest"
        atomic_write_text(root / "latest", name + "\n")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        why = "no space left on device" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        previous = latest_checkpoint(run_dir)
        kept = f"the previous checkpoint ({previous.name})" if previous is not None else "no earlier checkpoint"
        raise CheckpointError(
            f"could not write checkpoint {name} ({current}) in {root}: {why}. Nothing of it is used: {kept}, "
            f"`latest` and the logs are as they were. Free space, then `plasticlm resume {Path(run_dir)}`"
        ) from e
    return final


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of meta.json's contents without ``meta_sha256`` (canonical JSON: sorted keys)."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(as_json(body), sort_keys=True).encode()).hexdigest()


def with_checksums(meta: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``meta`` plus the size and sha256 of each file in ``CHECKSUMMED`` (those a sharded checkpoint
    has, and its ``dcp/`` files) and its own digest."""
    out = dict(meta)
    sharded = dist_checkpoint.checkpoint_format(directory) == "sharded"
    names = [n for n in CHECKSUMMED if not sharded or (directory / n).is_file()]
    names += dist_checkpoint.sharded_files(directory)
    out["files"] = {n: {"bytes": (directory / n).stat().st_size, "sha256": file_sha256(directory / n)}
                    for n in names}
    out["meta_sha256"] = meta_digest(out)
    return out


def verify_checkpoint(path: str | Path) -> list[str]:
    """Problems of a checkpoint directory, each naming its file ([] = intact). Checkpoints written
    before checksums were recorded are only checked for their files' presence."""
    path = Path(path)
    try:
        meta = read_json(path / "meta.json")
    except FileNotFoundError:
        return ["meta.json: missing"]
    except (OSError, ValueError) as e:
        return [f"meta.json: unreadable ({type(e).__name__}: {e})"]
    if not isinstance(meta, dict):
        return ["meta.json: not a JSON object"]
    problems = []
    if "meta_sha256" in meta and meta["meta_sha256"] != meta_digest(meta):
        problems.append("meta.json: its contents do not match its checksum (edited or corrupted)")
    files = meta.get("files")
    if not isinstance(files, dict):
        files = {n: None for n in LEGACY_FILES}  # an old checkpoint: no checksums to compare
    for name, rec in files.items():
        p = path / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif isinstance(rec, dict) and p.stat().st_size != rec.get("bytes"):
            problems.append(f"{name}: {p.stat().st_size} bytes, {rec.get('bytes')} written (truncated or overwritten)")
        elif isinstance(rec, dict) and file_sha256(p) != rec.get("sha256"):
            problems.append(f"{name}: sha256 differs from the one recorded in meta.json (corrupted)")
    return problems


def latest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest intact checkpoint: ``latest``, or, where it is damaged, the one before it (with a
    ``CheckpointWarning`` naming the damaged files). None when the run has no checkpoint; raises
    ``CheckpointError`` when it has some but none is intact."""
    newest = latest_checkpoint(run_dir)
    if newest is None:
        return None
    older = [p for p in reversed(list_checkpoints(run_dir)) if p.name < newest.name]
    damaged = []
    for p in [newest, *older]:
        problems = verify_checkpoint(p)
        if not problems:
            return p
        damaged.append(f"{p.name}: {'; '.join(problems)}")
        warnings.warn(f"checkpoint {p} is damaged ({'; '.join(problems)}); falling back to the one before it",
                      CheckpointWarning, stacklevel=2)
    raise CheckpointError(
        f"{run_dir}: no intact checkpoint ({' | '.join(damaged)}); restore the files, or start the run again with "
        "`plasticlm train ... --overwrite`"
    )


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
    problems = verify_checkpoint(path)
    if problems:
        raise CheckpointError(f"checkpoint {path} is damaged: {'; '.join(problems)}. `plasticlm resume` falls back "
                              "to the checkpoint before it; otherwise restore the file from a copy")
    if dist_checkpoint.checkpoint_format(path) == "sharded" or is_sharded(model):  # FSDP (dist_checkpoint.py)
        dist_checkpoint.load_model_and_optim(path, model, optimizer)
    else:
        _load_full(path, model, optimizer)
    if restore_rng:
        dist_checkpoint.restore_rng(torch.load(path / "rng.pt", weights_only=True))
    return read_json(path / "meta.json")


def _load_full(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """model.safetensors and optim.pt into a plain module (one process, DDP's raw model)."""
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    except RuntimeError as e:  # tensor shapes differ: the config's model changed since the checkpoint
        sizes = "; ".join(line.strip() for line in str(e).splitlines() if "size mismatch" in line)
        raise PlasticError(
            f"checkpoint {path} does not fit the model built from the run's config.toml ({sizes or e}); "
            "model.* (preset, seq_len: the position table, vocab_size) must stay as they were when it was written"
        ) from None
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to wte
    if missing or unexpected:
        raise PlasticError(f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}")
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optim.pt", weights_only=True))


def load_component_states(path: str | Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The loop components' states saved with a checkpoint: components.pt (tensors on the CPU), or for
    a checkpoint written before it, meta.json's "components" (or, older, "callbacks")."""
    path = Path(path)
    if (path / "components.pt").is_file():
        return torch.load(path / "components.pt", weights_only=True, map_location="cpu")
    meta = meta if meta is not None else read_json(path / "meta.json")
    return meta.get("components", meta.get("callbacks", {}))


def prune_checkpoints(run_dir: str | Path, keep_last: int, pinned: set[str]) -> list[str]:
    """Delete all but the last ``keep_last`` checkpoints and the ``pinned`` ones; return deleted names.

    Each one is first renamed to ``.old-<name>-<pid>`` (atomic), then deleted: a kill in the middle of
    the deletion leaves a hidden directory that the next prune or save removes, never a ``task-*``
    directory without its meta.json, which no later prune would see (tests/test_kill_random.py)."""
    root = checkpoints_dir(run_dir)
    for stale in root.glob(".old-*"):  # left by a prune or a save that was killed (one writer per run)
        shutil.rmtree(stale, ignore_errors=True)
    found = list_checkpoints(run_dir)
    keep = {p.name for p in found[-keep_last:]} if keep_last > 0 else set()
    latest = latest_checkpoint(run_dir)
    if latest is not None:
        keep.add(latest.name)
    deleted = []
    for p in found:
        if p.name not in keep and p.name not in pinned:
            trash = root / f".old-{p.name}-{os.getpid()}"
            p.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
            deleted.append(p.name)
    return deleted


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over the model's tensors (names sorted): equal hashes = bit-identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
