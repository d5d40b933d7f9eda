"""Run-directory files: atomic writes, append-only JSONL logs that can be rolled back, run metadata.

Every file other tools read is written atomically (temp file in the same directory, fsync,
``os.replace``), so a kill never leaves a half-written file. JSONL logs (``metrics.jsonl``,
``probes.jsonl``) are appended line by line; a checkpoint records how many lines each log had, and
a resume truncates the logs back to that count, so a resumed run has no duplicated or missing rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from plasticlm.errors import PlasticError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` (atomic rename).

    The temporary name keeps the target's suffix, so writers that infer a format from the file
    name (matplotlib's ``savefig``) behave as for the target. On an exception the temporary file
    is removed and the target is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def as_json(obj: Any) -> Any:
    """``obj`` as it reads back from a JSON file this module wrote (tuples as lists, numpy as Python)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path, strict: bool = False) -> list[dict]:
    """All complete rows of a JSONL file ([] if it does not exist); a torn last line is ignored.

    ``strict``: a line that is not a JSON object, other than a last line without its newline (torn
    by a kill), raises ``PlasticError`` naming the file and the line instead of ending the read.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        if not strict:
            raise

        raise PlasticError(f"{path}: not UTF-8 text (byte {e.start}); it is not a plasticlm log") from None
    rows = []
    lines = text.splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if strict and not isinstance(row, dict):
                raise json.JSONDecodeError("not a JSON object", line, 0)
            rows.append(row)
        except json.JSONDecodeError as e:
            if strict and (i < len(lines) or text.endswith("\n")):
                raise PlasticError(f"{path}: line {i} is not a JSON object ({e.msg}); the file was edited or "
                                   "corrupted: restore it, or delete that line") from None
            break  # a line torn by a kill: everything after it is not trusted
    return rows


class JsonlLog:
    """An append-only JSONL file with a row count that checkpoints record and resumes restore."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.rows = len(read_jsonl(self.path)) if enabled else 0

    def append(self, row: dict, unique_key: str | None = None) -> bool:
        """Append one row under an exclusive file lock (concurrent writers, e.g. post-hoc probe array
        jobs, never interleave). A torn last line left by a killed writer is cut off first, so that it
        never swallows this row; a failed write (a full disk) is cut off again before the error is
        raised. With ``unique_key``, a row whose ``row[unique_key]`` is already in the file is not
        written again (returns False): two workers that probed the same checkpoint leave one row."""
        if not self.enabled:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(row, default=_json_default) + "\n").encode("utf-8")
        with self.path.open("a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                size = _cut_torn_tail(f)
                if unique_key is not None and _has_value(f, unique_key, row.get(unique_key)):
                    return False
                try:
                    f.write(line)
                    f.flush()
                except OSError:
                    f.truncate(size)  # O_APPEND: nothing after ``size`` is ours to keep
                    raise
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self.rows += 1
        return True

    def truncate_to(self, n: int) -> None:
        """Keep the first ``n`` rows (rewritten atomically)."""
        if not self.enabled:
            return
        rows = read_jsonl(self.path)[:n]
        atomic_write_text(self.path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))
        self.rows = len(rows)


def _cut_torn_tail(f: Any) -> int:
    """Truncate an open (locked) file after its last newline; return the new size."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return size
    keep = size
    while keep > 0:  # scan back in blocks for the last newline
        start = max(0, keep - 65536)
        f.seek(start)
        block = f.read(keep - start)
        nl = block.rfind(b"\n")
        if nl >= 0:
            keep = start + nl + 1
            break
        keep = start
    f.truncate(keep)
    return keep


def _has_value(f: Any, key: str, value: Any) -> bool:
    f.seek(0)
    needle = json.dumps(value, default=_json_default).encode("utf-8")
    for raw in f:
        if needle not in raw:  # cheap test before parsing the line
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get(key) == value:
            return True
    return False


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The git commit of the code (with '-dirty' when there are local changes), None outside git."""
    here = Path(cwd or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict[str, Any]:
    """Code version and package versions, recorded in every run directory for reproducibility."""
    pkgs = {}
    for name in ["plasticlm", "torch", "numpy", "scipy", "tokenizers", "datasets", "safetensors", "matplotlib"]:
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    return {
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": pkgs,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
