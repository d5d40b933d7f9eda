"""The processes that tests/test_kill_random.py kills: `plasticlm` commands run in forked children.

The children are forked from a multiprocessing forkserver that imported torch and plasticlm once
(this module, listed in its preload), so a command starts in well under a second instead of the
few seconds (tens on a busy machine) an interpreter needs to import torch; the kill suite starts
about 40 of them. Such a child runs the real CLI (``plasticlm.cli.main``) in a process of its own,
which a test kills with SIGKILL.

``hook`` makes a child SIGKILL itself at one step of a write (the n-th time it reaches that step),
leaving on disk what a kill there leaves: a temporary file half written, a complete temporary
directory not yet renamed, a checkpoint renamed into place whose ``latest`` pointer is not yet
moved, an old copy moved aside whose replacement is not yet in place, a torn JSONL row. The steps
are those of ``plasticlm.checkpoint.save_checkpoint`` and of a post-hoc probe's row; ``HOOKS``
lists them. Nothing here changes what the command computes.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import torch  # noqa: F401  (imported once, by the forkserver)
import torch._dynamo  # noqa: F401  (imported lazily by the optimizer: seconds, so imported here once)

import plasticlm.analysis  # noqa: F401
import plasticlm.checkpoint as ck
import plasticlm.cli
import plasticlm.probe
import plasticlm.runlog
import plasticlm.sweep  # noqa: F401
import plasticlm.train

for _name in plasticlm.cli.COMMAND_MODULES:  # what build_parser() would import on every start
    importlib.import_module(_name)

# The code version and package versions that every run.json and checkpoint records: the same values,
# looked up once here instead of by two git processes and eight metadata scans per checkpoint.
_COMMIT = plasticlm.runlog.git_commit()
plasticlm.runlog.git_commit = lambda cwd=None: _COMMIT
plasticlm.runlog.metadata.version = functools.lru_cache(maxsize=None)(plasticlm.runlog.metadata.version)

CHECKPOINT_HOOKS = ("model.safetensors", "optim.pt", "rng.pt", "meta.json", "rename", "latest", "after")
"""Steps of a checkpoint write: a weights file half written; optim.pt, rng.pt or meta.json half
written (a temporary file in the temporary directory); the temporary directory complete but not
renamed; renamed into place with ``latest`` half rewritten (still naming the previous one); all
written, before pruning and run.json. ``swap`` (a resumed run replacing an existing checkpoint: the
old copy moved aside, the new one not yet renamed) needs a run that re-reaches a saved boundary."""
PROBE_HOOKS = ("probe-npz", "probe-row")
"""Steps of a post-hoc probe: its per-sequence npz written but no row yet; its row half appended."""
HOOKS = (*CHECKPOINT_HOOKS, "swap", *PROBE_HOOKS)


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _half_temp(target: str | Path, data: bytes) -> None:
    """What ``runlog.atomic_write_bytes`` leaves when killed half-way: its temporary file, half full."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, _ = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.write(fd, data[: len(data) // 2])
    os.close(fd)


def install(point: str, nth: int) -> None:
    """SIGKILL this process the ``nth`` time (1-based) it reaches write step ``point`` (see HOOKS)."""
    if point not in HOOKS:
        raise ValueError(f"unknown kill point {point!r}; one of {HOOKS}")
    seen = {"n": 0}

    def hit() -> bool:
        seen["n"] += 1
        return seen["n"] == nth

    if point == "model.safetensors":
        real_save = ck.save_model

        def save_model(model, path):
            real_save(model, path)
            if hit():
                os.truncate(path, os.path.getsize(path) // 2)
                _die()

        ck.save_model = save_model
    elif point in ("optim.pt", "rng.pt", "meta.json"):
        real_bytes, real_json = ck.atomic_write_bytes, ck.atomic_write_json

        def write_bytes(path, data):
            if Path(path).name == point and hit():
                _half_temp(path, data)
                _die()
            return real_bytes(path, data)

        def write_json(path, obj):
            if Path(path).name == point and hit():
                _half_temp(path, json.dumps(plasticlm.runlog.as_json(obj)).encode())
                _die()
            return real_json(path, obj)

        ck.atomic_write_bytes, ck.atomic_write_json = write_bytes, write_json
    elif point == "rename":
        real_fsync = ck._fsync

        def fsync(path):
            real_fsync(path)
            if Path(path).name.startswith(".tmp-") and hit():
                _die()

        ck._fsync = fsync
    elif point == "latest":
        real_text = ck.atomic_write_text

        def write_text(path, text):
            if Path(path).name == "latest" and hit():
                _half_temp(path, text.encode())
                _die()
            return real_text(path, text)

        ck.atomic_write_text = write_text
    elif point == "after":
        real_prune = plasticlm.train.prune_checkpoints

        def prune(*a, **k):
            if hit():
                _die()
            return real_prune(*a, **k)

        plasticlm.train.prune_checkpoints = prune
    elif point == "swap":
        real_rmtree = ck.shutil.rmtree

        def rmtree(path, *a, **k):
            if Path(path).name.startswith(".old-") and hit():
                _die()
            return real_rmtree(path, *a, **k)

        ck.shutil.rmtree = rmtree  # only in this child
    elif point == "probe-npz":
        real_npz = plasticlm.probe.atomic_write_bytes

        def write_npz(path, data):
            real_npz(path, data)
            if Path(path).suffix == ".npz" and hit():
                _die()

        plasticlm.probe.atomic_write_bytes = write_npz
    else:  # probe-row
        real_append = plasticlm.runlog.JsonlLog.append

        def append(self, row, unique_key=None):
            if self.path.name == "probes.jsonl" and hit():
                line = json.dumps(row, default=plasticlm.runlog._json_default).encode()
                with self.path.open("ab") as f:
                    f.write(line[: len(line) // 2])
                _die()
            return real_append(self, row, unique_key)

        plasticlm.runlog.JsonlLog.append = append


def run_cli(argv: list[str], home: str, hook: tuple[str, int] | None = None) -> None:
    """The child's body: ``plasticlm ARGV`` with $PLASTICLM_HOME = ``home`` (the forkserver's
    environment is that of its start, so the test passes what it needs)."""
    os.environ["PLASTICLM_HOME"] = home
    torch.set_num_threads(1)  # as the reference run: bit-identical weights need the same threads
    if hook is not None:
        install(*hook)
    sys.exit(plasticlm.cli.main(argv))
