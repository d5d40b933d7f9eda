"""A lock for a cache entry that one process builds while others wait: an exclusive ``flock``.

Unlike a lock *file* whose existence is the lock, a ``flock`` dies with its holder, so a process killed
mid-build never leaves the next one waiting forever. No torch here: the command line's parsing imports
the data cache, which uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def cache_lock(path: Path, what: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its directory) for the ``with`` block; wait
    for another holder, saying so on stderr when ``what`` names the entry. The kernel releases the lock
    when its holder exits, however it exits (SIGKILL included); the file stays (as with the run lock,
    ``plasticlm.runlock``: deleting a lock file races with a process that has just opened it). Used by
    the data cache (``plasticlm.data.paths``) and the CPU kernels' build (``plasticlm.cpu_kernels``).
    Callers check the cache again once they hold the lock: the holder they waited for may have built
    the entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if what:
                print(f"plasticlm: waiting for another process that is building {what} ({path})", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
