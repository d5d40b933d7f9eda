"""Progress bars on stderr (tqdm), safe next to process pools.

tqdm guards its output with a multiprocessing lock by default; created in a parent that also runs
a spawn pool, that semaphore is reported as leaked at exit. Bars here use a thread lock instead
(only the parent process draws bars).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from tqdm.auto import tqdm


def progress_bar(**kwargs: Any):
    """A tqdm bar on stderr with a thread lock; keyword arguments go to tqdm."""

    tqdm.set_lock(threading.RLock())
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(**kwargs)
