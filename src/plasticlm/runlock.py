"""One writer per run directory: ``RUN_DIR/.lock``, held with ``flock`` by train, resume and probe.

``train`` and ``resume`` hold it exclusively, and so does ``probe`` of a whole run (it decides which
checkpoints are pending, so two of them would probe the same ones). ``probe --checkpoint`` (cluster
array jobs, one checkpoint each) holds it shared: such jobs run side by side, but never beside a
training process or a whole-run probe. A second writer is refused with a message that names the
holder, whose PID, host, command and start time are written into the lock file.

The kernel releases a ``flock`` when its holder dies (SIGKILL included), so a lock can never be
held by a dead process; a lock file that still names one is stale, and the next writer takes it
over with a warning. The file itself is never deleted (deleting a lock file races with a process
that has just opened it); it is emptied when its last holder lets go. Works on local filesystems and
on NFSv4 (Linux emulates ``flock`` with byte-range locks there).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plasticlm import dist
from plasticlm.errors import PlasticError

LOCK_NAME = ".lock"


class RunLocked(PlasticError):
    """Another live process holds the run directory's lock."""


class StaleLockWarning(UserWarning):
    """A lock file named a process that no longer held it; it was taken over."""


def _read(fd: int) -> dict[str, Any]:
    raw = os.pread(fd, 4096, 0)
    try:
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return {"unreadable": raw[:80].decode("utf-8", "replace")}
    return info if isinstance(info, dict) else {}


def _write(fd: int, info: dict[str, Any]) -> None:
    data = json.dumps(info).encode("utf-8") + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def describe(info: dict[str, Any]) -> str:
    if not info.get("pid"):
        return "another process (it recorded no PID)"
    return (f"`plasticlm {info.get('command', '?')}` (PID {info['pid']} on host {info.get('host', '?')}, "
            f"since {info.get('since', '?')})")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str, shared: bool = False, create: bool = False) -> Iterator[dict[str, Any]]:
    """Hold ``RUN_DIR/.lock`` for the ``with`` block (``create``: make the directory if needed); raise
    ``RunLocked`` naming the holder when another process holds it in a conflicting mode."""
    path = Path(run_dir) / LOCK_NAME
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not (path.parent / "config.toml").is_file():
        raise PlasticError(f"{run_dir} is not a run directory (no config.toml)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            raise RunLocked(
                f"{run_dir} is in use by {describe(holder)}: one process at a time may train, resume or probe a "
                f"run. Wait for it to end (or stop it: kill {holder.get('pid', 'PID')}), then run this again. The "
                f"lock ({path}) is released when that process exits, however it exits"
            ) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv[1:]}
        previous = _read(fd)
        if not shared and previous.get("pid") and previous.get("pid") != os.getpid():
            alive = previous.get("host") == me["host"] and pid_alive(int(previous["pid"]))
            warnings.warn(
                f"{path}: took over a stale lock of {describe(previous)}, which "
                f"{'no longer holds it' if alive else 'is not running'} (it was killed before it could let go)",
                StaleLockWarning, stacklevel=3,
            )
        _write(fd, me)
        try:
            yield me
        finally:
            with contextlib.suppress(OSError):
                # Empty the file when no one else holds it (an exclusive lock, or the last shared one).
                if not shared or _try_upgrade(fd):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def main_lock(run_dir: str | Path, command: str, shared: bool = False,
              create: bool = False) -> contextlib.AbstractContextManager[dict[str, Any] | None]:
    """``run_lock`` taken by rank 0 alone (one process: exactly ``run_lock``): under torchrun the ranks
    of one run are one writer. Join the process group first (``dist.init_from_env``)."""
    return run_lock(run_dir, command, shared=shared, create=create) if dist.is_main() else contextlib.nullcontext()


def _try_upgrade(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
