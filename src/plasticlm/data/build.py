"""Token shards built by streaming, in many processes, resumably, on Hugging Face ``datatrove``.

Each language is cut into ``data.tasks`` build tasks (``data.tasks = 0``: one per worker for the
sources read in place, one per language for the cached ones). A task reads its slice of the
language's documents one batch at a time, routes each document to the validation or training split,
tokenizes it and appends its ids (then the end-of-document id) to its own files::
    <work>/<lang>/task-00003.<split>.bin    the ids (uint16, or uint32 above 65,536 tokens), in read order
    <work>/<lang>/task-00003.<split>.idx    int64 rows (document number, tokens with the end-of-document id,
                                            UTF-8 bytes), one per document
    <work>/<lang>/task-00003.json           written last: the task is complete (counts, seconds)

so no language, and no document list, is ever held in memory, and no copy of the text is written
when the source is already on disk (``local``) or streamed (``hf``). A killed build is resumed by
running it again: complete tasks are skipped (their marker exists), an incomplete one restarts from
its beginning (its ``.partial`` files are overwritten). Then, per language and split, the merge
concatenates the tasks' documents in a fixed order into the shard that ``shards.open_shard``
memory-maps (written atomically, header last; ``shards.py`` has the format) and deletes the task files.

Two source kinds (``Source.direct``):
- cached sources (``debian-docs``, ``synthetic``: a few MB, extracted into ``docs.jsonl`` by
  ``corpus.build_corpus``): documents are split by the seeded permutation of ``splits.split_indices``
  and the shards hold them in that permuted order, bit for bit the shards of the in-memory pipeline
  they replace (the demo's data is unchanged);
- direct sources (``local`` files read in place, ``hf`` datasets streamed): a document goes to the
  validation split when a hash of (``data.split_seed``, language, its text) falls below
  ``data.val_fraction`` (the same text always lands in the same split: no train/validation leak), and
  each task's documents are shuffled by a seeded permutation before the tasks are concatenated in
  order (a topic-ordered source is not served as one topic per task; data-sources.md).

Token targets (``data.train_tokens``, ``data.val_tokens`` and their per-language overrides): a direct
source's task stops once it holds ``ceil(target / tasks)`` tokens of each split with a target (the
source is read no further), and every merged shard is cut to exactly its target; a source with fewer
tokens is an error naming the language. ``data.max_bytes_per_language`` caps the text a direct
task reads at ``ceil(cap / tasks)`` bytes.

Fan-out: datatrove's ``LocalPipelineExecutor`` (``data.workers`` processes) by default, its
``SlurmPipelineExecutor`` with ``data.executor = "slurm"`` (one CPU per task; the command submits the
array job and asks to be run again to merge once the tasks are done).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from plasticlm.cachelock import cache_lock
from plasticlm.config import DataConfig
from plasticlm.data import shards
from plasticlm.data.paths import lang_seed, read_cached_json
from plasticlm.data.sources import make_source
from plasticlm.data.splits import split_indices
from plasticlm.data.tokenizer import load_tokenizer
from plasticlm.errors import DataError
from plasticlm.runlog import atomic_path, atomic_write_json

SPLITS = ("train", "val")
BATCH_DOCS = 256
COPY_BYTES = 8 << 20  # merge write buffer
IN_PROCESS_BYTES = 64 << 20
"""Cached sources with less text than this in all are tokenized in this process (the tokenizer's own
threads), where starting a build process and its workers would cost more than it saves (the demo)."""


class ShardsPending(DataError):
    """The build tasks were submitted (SLURM) and are not finished: run the command again to merge."""


@dataclass(frozen=True)
class LangBuild:
    """Everything a build task of one language needs (picklable: it travels to worker processes)."""

    lang: str
    base: str  # shard base path (shards.shard_paths)
    work: str  # directory of the task files
    tasks: int
    direct: bool
    tokenizer: str  # tokenizer.json path or "bytes"
    eot_token: str
    vocab_size: int
    split_seed: int
    val_fraction: float
    targets: tuple[int, int]  # (train, val) tokens; 0 = everything
    max_bytes: int  # direct sources: cap on text bytes read per language (0 = none)
    data: dict  # the DataConfig as a dict (to rebuild the source in a worker)
    meta: dict  # added to both shard headers
    docs_path: str = ""  # cached sources: docs.jsonl
    n_docs: int = 0  # cached sources: documents in docs.jsonl
    text_bytes: int = 0  # cached sources: UTF-8 bytes of docs.jsonl's documents

    def task_json(self, t: int) -> Path:
        return Path(self.work) / f"task-{t:05d}.json"

    def task_file(self, t: int, split: str, ext: str) -> Path:
        return Path(self.work) / f"task-{t:05d}.{split}.{ext}"


# ---------------------------------------------------------------------------------------------- routing


def split_mask(n_docs: int, lang: str, seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Cached sources: (is_val per document, position of each document in its split's order), from
    ``splits.split_indices`` (the permutation split)."""

    train, val = split_indices(n_docs, lang, seed, val_fraction)
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[val] = True
    position = np.empty(n_docs, dtype=np.int64)
    position[train] = np.arange(len(train))
    position[val] = np.arange(len(val))
    return is_val, position


def hash_is_val(text: str, salt: bytes, val_fraction: float) -> bool:
    """Direct sources: a document is validation when blake2b(salt + text) / 2^64 < val_fraction."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2.0**64


def route_salt(seed: int, lang: str) -> bytes:
    return f"plasticlm-split/{seed}/{lang}".encode()[:64]


# ---------------------------------------------------------------------------------------------- documents


def _cached_docs(b: LangBuild, t: int) -> Iterator[tuple[int, str]]:
    """(document number, text) of task t's contiguous block of docs.jsonl."""
    lo, hi = b.n_docs * t // b.tasks, b.n_docs * (t + 1) // b.tasks
    with open(b.docs_path, encoding="utf-8", newline="\n") as f:
        for i, line in enumerate(f):
            if i >= hi:
                break
            if i >= lo:
                yield i, json.loads(line)


def _direct_docs(b: LangBuild, t: int) -> Iterator[tuple[int, str]]:
    src = make_source(DataConfig(**b.data))
    cap = math.ceil(b.max_bytes / b.tasks) if b.max_bytes else 0
    total = 0
    for i, doc in enumerate(src.task_documents(b.lang, t, b.tasks)):
        if not doc.strip():
            continue
        yield i, doc
        total += len(doc.encode("utf-8"))
        if 0 < cap <= total:
            return


# ---------------------------------------------------------------------------------------------- a task


def run_task(b: LangBuild, t: int) -> dict[str, Any]:
    """Tokenize task t of language b.lang into its task files (skipped when already complete)."""
    done = read_cached_json(b.task_json(t))
    if done is not None:
        return done

    t0 = time.perf_counter()
    tok = load_tokenizer(b.tokenizer, b.eot_token)
    dtype = shards.dtype_for(tok.vocab_size).newbyteorder("<")
    Path(b.work).mkdir(parents=True, exist_ok=True)
    salt = route_salt(b.split_seed, b.lang)
    is_val = split_mask(b.n_docs, b.lang, b.split_seed, b.val_fraction)[0] if not b.direct else None
    quota = {s: math.ceil(n / b.tasks) if (b.direct and n) else 0 for s, n in zip(SPLITS, b.targets)}
    stack = contextlib.ExitStack()
    files = {s: {ext: stack.enter_context(b.task_file(t, s, ext + ".partial").open("wb")) for ext in ("bin", "idx")}
             for s in SPLITS}
    counts = {s: {"tokens": 0, "documents": 0, "bytes": 0} for s in SPLITS}
    pending: dict[str, list[tuple[int, str]]] = {s: [] for s in SPLITS}

    def flush(split: str) -> None:
        batch = pending[split]
        if not batch:
            return
        arr = shards.encode_documents(tok, [d for _, d in batch], dtype)
        lengths = np.asarray([len(d.encode("utf-8")) for _, d in batch], dtype=np.int64)
        # text never encodes to the end-of-document id (tokenizer.py), so it marks the document ends
        ends = np.flatnonzero(arr == tok.eot_id)
        assert len(ends) == len(batch), "an end-of-document id inside a document"
        ntok = np.diff(np.concatenate([[-1], ends]))
        rows = np.stack([np.asarray([i for i, _ in batch], dtype=np.int64), ntok.astype(np.int64), lengths], 1)
        files[split]["bin"].write(arr.tobytes())
        files[split]["idx"].write(rows.astype("<i8").tobytes())
        c = counts[split]
        c["tokens"] += len(arr)
        c["documents"] += len(batch)
        c["bytes"] += int(lengths.sum())
        pending[split] = []

    def full(split: str) -> bool:
        return bool(quota[split]) and counts[split]["tokens"] >= quota[split]

    with stack:
        docs = _direct_docs(b, t) if b.direct else _cached_docs(b, t)
        for i, doc in docs:
            split = "val" if (hash_is_val(doc, salt, b.val_fraction) if b.direct else is_val[i]) else "train"
            if full(split):
                if all(full(s) for s in SPLITS):
                    break
                continue
            pending[split].append((i, doc))
            if len(pending[split]) >= BATCH_DOCS:
                flush(split)
        for s in SPLITS:
            flush(s)
    for s in SPLITS:
        for ext in ("bin", "idx"):
            os.replace(b.task_file(t, s, ext + ".partial"), b.task_file(t, s, ext))
    doc = {"lang": b.lang, "task": t, "tasks": b.tasks, "splits": counts, "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(b.task_json(t), doc)
    return doc


# ---------------------------------------------------------------------------------------------- merge


def _order(b: LangBuild, split: str, idx: list[np.ndarray]) -> Iterator[tuple[int, int]]:
    """(task, row) pairs of the split's documents in shard order."""
    if not b.direct:  # the permutation order of splits.split_indices, across all tasks
        position = split_mask(b.n_docs, b.lang, b.split_seed, b.val_fraction)[1]
        task = np.concatenate([np.full(len(x), t) for t, x in enumerate(idx)]) if idx else np.zeros(0, int)
        row = np.concatenate([np.arange(len(x)) for x in idx]) if idx else np.zeros(0, int)
        docs = np.concatenate([x[:, 0] for x in idx]) if idx else np.zeros(0, int)
        for k in np.argsort(position[docs], kind="stable"):
            yield int(task[k]), int(row[k])
        return
    for t, x in enumerate(idx):  # each task's documents shuffled, tasks in order
        rng = np.random.default_rng(lang_seed(b.split_seed, b.lang, f"order/{split}/{t}/{b.tasks}"))
        for r in rng.permutation(len(x)):
            yield t, int(r)


def merge_split(b: LangBuild, split: str) -> dict[str, Any]:
    """Concatenate the tasks' documents of ``split`` into the shard; cut to the target; write the header."""

    tok = load_tokenizer(b.tokenizer, b.eot_token)
    dtype = shards.dtype_for(tok.vocab_size)
    item = dtype.itemsize
    idx = [np.fromfile(b.task_file(t, split, "idx"), dtype="<i8").reshape(-1, 3) for t in range(b.tasks)]
    starts = [np.concatenate([[0], np.cumsum(x[:, 1])]) for x in idx]
    target = b.targets[SPLITS.index(split)]
    bin_path, _ = shards.shard_paths(Path(b.base), split)
    h = hashlib.sha256()
    count = n_docs = 0
    n_bytes = 0.0
    fds = [os.open(b.task_file(t, split, "bin"), os.O_RDONLY) for t in range(b.tasks)]
    try:
        with atomic_path(bin_path) as tmp, open(tmp, "wb", buffering=0) as out:
            buf = bytearray()
            for t, r in _order(b, split, idx):
                ntok = int(idx[t][r, 1])
                take = ntok if not target else min(ntok, target - count)
                raw = os.pread(fds[t], take * item, int(starts[t][r]) * item)
                buf += raw
                count += take
                n_docs += 1
                n_bytes += idx[t][r, 2] * (take / ntok if take < ntok else 1.0)
                if len(buf) >= COPY_BYTES:
                    h.update(buf)
                    out.write(buf)
                    buf = bytearray()
                if target and count >= target:
                    break
            h.update(buf)
            out.write(buf)
    finally:
        for fd in fds:
            os.close(fd)
    if target and count < target:
        raise DataError(
            f"language {b.lang!r}: the source gave {count:,} {split} tokens, fewer than the target of {target:,} "
            f"(data.{split}_tokens or data.{split}_tokens_per_language): add data, or lower the target"
        )
    header = {"format": shards.FORMAT, "split": split, "dtype": dtype.name, "count": count,
              "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "documents": n_docs, "bytes": int(round(n_bytes)),
              "tokenizer_hash": tok.hash, "sha256": h.hexdigest(), **b.meta}
    atomic_write_json(shards.shard_paths(Path(b.base), split)[1], header)
    return header


# ---------------------------------------------------------------------------------------------- fan-out


def task_list(builds: list[LangBuild]) -> list[tuple[LangBuild, int]]:
    return [(b, t) for b in builds for t in range(b.tasks)]


def workers(data) -> int:
    return data.workers or os.cpu_count() or 1


def tokens_written(builds: list[LangBuild]) -> int:
    """Tokens in the task files so far (complete and partial), for progress."""
    total = 0
    for b in builds:
        item = shards.dtype_for(b.vocab_size).itemsize
        for p in Path(b.work).glob("task-*.bin*"):
            with contextlib.suppress(FileNotFoundError):  # renamed between glob and stat
                total += p.stat().st_size // item
    return total


def run_tasks(data, builds: list[LangBuild], logging_dir: Path, progress: bool) -> None:
    """Run every incomplete task (resumable): in this process with one worker, else datatrove's local
    executor in a build process (its log in ``logging_dir/build.log``), or a SLURM submission (then
    ShardsPending: run again to merge once the array job is done)."""
    todo = [(b, t) for b, t in task_list(builds) if read_cached_json(b.task_json(t)) is None]
    if not todo:
        return
    logging_dir.mkdir(parents=True, exist_ok=True)
    if data.executor == "slurm":
        _submit_slurm(data, builds, logging_dir, len(todo))

    goal = sum(b.targets[0] + b.targets[1] for b in builds) if all(all(b.targets) for b in builds) else None
    bar = tqdm(total=goal, desc=f"tokenize ({len(todo)} tasks)", unit="tok", unit_scale=True, file=sys.stderr,
               disable=not progress)
    with bar:
        small = all(not b.direct for b in builds) and sum(b.text_bytes for b in builds) <= IN_PROCESS_BYTES
        if workers(data) == 1 or len(todo) == 1 or small:
            for b, t in todo:
                run_task(b, t)
                bar.n = tokens_written(builds)
                bar.refresh()
            return
        job = _write_job(data, builds, logging_dir)
        log = logging_dir / "build.log"
        with open(log, "ab") as out:
            # a session of its own: an interrupt stops the build process and datatrove's workers together
            proc = subprocess.Popen([sys.executable, "-m", "plasticlm.data.build_step", str(job)], stdout=out,
                                    stderr=subprocess.STDOUT, env=_child_env(), start_new_session=True)
            try:
                while proc.poll() is None:
                    time.sleep(0.5)
                    bar.n = tokens_written(builds)
                    bar.refresh()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                raise
    missing = [(b.lang, t) for b, t in task_list(builds) if read_cached_json(b.task_json(t)) is None]
    if proc.returncode or missing:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise DataError("\n  ".join([f"the shard build stopped (exit {proc.returncode}; unfinished tasks "
                                      f"{missing[:6]}); complete tasks are kept, run the command again. Its log "
                                      f"{log} ends:", *tail]))


def _write_job(data, builds: list[LangBuild], logging_dir: Path) -> Path:
    """The pickled (data config, builds, logging dir) that ``python -m plasticlm.data.build_step`` runs."""
    job = logging_dir / "job.pkl"
    with atomic_path(job) as tmp:
        tmp.write_bytes(pickle.dumps((data, builds, logging_dir)))
    return job


def _child_env() -> dict[str, str]:
    """This process's environment, with this copy of plasticlm first on the path (the build process must
    import the same code) and one tokenizer thread per worker process (the workers are the parallelism)."""
    root = str(Path(__file__).resolve().parents[2])  # the directory holding this copy of plasticlm
    path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}


def _submit_slurm(data, builds: list[LangBuild], logging_dir: Path, n_todo: int) -> None:
    submitted = logging_dir / "plasticlm-submitted.json"
    if submitted.exists():
        raise ShardsPending(
            f"{n_todo} shard-building task(s) submitted to SLURM before ({submitted}) are not finished: wait for "
            f"them (squeue), or if they failed, see {logging_dir}/logs, delete {submitted} and run again"
        )
    job = _write_job(data, builds, logging_dir)
    # datatrove lives in build_step; submitting the array job takes seconds
    proc = subprocess.run([sys.executable, "-m", "plasticlm.data.build_step", "--submit", str(job)],
                          capture_output=True, text=True, env=_child_env())
    if proc.returncode:
        raise DataError(f"submitting the shard build to SLURM failed (exit {proc.returncode}):\n"
                        + (proc.stderr or proc.stdout)[-2000:])
    atomic_write_json(submitted, {"tasks": n_todo, "time": time.time()})
    raise ShardsPending(
        f"submitted {n_todo} shard-building task(s) to SLURM (logs: {logging_dir}); run the same command again "
        "when they have finished, to merge them into the token shards"
    )


def build_languages(data, builds: list[LangBuild], work_root: Path, progress: bool) -> dict[str, dict[str, Any]]:
    """Tasks, then merge, for every language in ``builds``; returns lang -> split -> header.

    Each language's shards are built under their lock (``paths.cache_lock``, taken in one order by
    every process): a second process building them at the same time waits, then reads them."""
    with contextlib.ExitStack() as stack:
        for b in sorted(builds, key=lambda b: b.work):
            stack.enter_context(cache_lock(Path(b.work).with_suffix(".lock"), f"the {b.lang} token shards"))
        headers: dict[str, dict[str, Any]] = {}
        for b in builds:  # built by the process this one waited for
            done = {s: shards.read_header(Path(b.base), s) for s in SPLITS}
            if all(done.values()):
                headers[b.lang] = done
        todo = [b for b in builds if b.lang not in headers]
        if todo:
            headers.update(_build(data, todo, work_root, progress))
    return headers


def _build(data, builds: list[LangBuild], work_root: Path, progress: bool) -> dict[str, dict[str, Any]]:
    key = hashlib.sha256(json.dumps([asdict(b) for b in builds], sort_keys=True).encode()).hexdigest()[:16]
    run_tasks(data, builds, work_root / "logs" / key, progress)
    headers: dict[str, dict[str, Any]] = {}
    for b in builds:
        headers[b.lang] = {s: merge_split(b, s) for s in SPLITS}
        for t in range(b.tasks):  # the shards are complete: the task files are no longer needed
            for s in SPLITS:
                for ext in ("bin", "idx"):
                    b.task_file(t, s, ext).unlink(missing_ok=True)
            b.task_json(t).unlink(missing_ok=True)
    return headers
