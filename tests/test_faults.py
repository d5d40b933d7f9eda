"""Faults (issue 18, item 1): damaged checkpoints, a full disk, two writers on one run directory,
concurrent appends to probes.jsonl. Each test says what is injected and what must hold."""

import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import plasticlm
import plasticlm.checkpoint as ckpt_mod
from plasticlm.checkpoint import (
    CHECKSUMMED,
    latest_checkpoint,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    verify_checkpoint,
    weights_hash,
)
from plasticlm.cli import main
from plasticlm.errors import CheckpointError, CheckpointWarning, PlasticError
from plasticlm.model import GPT, build_gpt_config
from plasticlm.runlock import RunLocked, StaleLockWarning, run_lock
from plasticlm.runlog import JsonlLog, read_json, read_jsonl
from plasticlm.train import Trainer, resume, train
from tests.fakes import WITH_PROBES, fake_data, tiny_config

PROBE = ("probe.steps=4", "probe.eval_every=2", "probe.sequences=4", WITH_PROBES)


def _final_hash(cfg, run_dir, data):
    t = Trainer(cfg, run_dir, data, quiet=True)
    t.restore(latest_checkpoint(run_dir))
    return weights_hash(t.model)


def _metrics(run_dir):
    return [{k: v for k, v in r.items() if not k.endswith(("tokens_per_s", "seconds"))}
            for r in read_jsonl(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run: 3 languages x 2 cycles, a checkpoint after every task."""
    import torch

    torch.set_num_threads(1)  # as every test here runs (conftest): bit-identical comparisons need it
    d = tmp_path_factory.mktemp("ref")
    data = fake_data()
    cfg = tiny_config("train.keep_last=6")
    train(cfg, d / "run", data=data, quiet=True)
    return cfg, data, d / "run"


def _interrupted(cfg, data, run_dir, stop_after_task: int):
    """Train until the checkpoint after task ``stop_after_task``, then stop as a kill would."""
    from plasticlm.components import Component

    class Stop(Component):
        def on_checkpoint(self, loop, path):
            if loop.task.index == stop_after_task:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir, data=data, quiet=True, components=[Stop()])


# ---------------------------------------------------------------------------- checksums


def test_meta_records_checksums_of_every_file(reference):
    _, _, run = reference
    for c in list_checkpoints(run):
        meta = read_json(c / "meta.json")
        assert set(meta["files"]) == set(CHECKSUMMED) and meta["meta_sha256"]
        for name, rec in meta["files"].items():
            assert rec["bytes"] == (c / name).stat().st_size and len(rec["sha256"]) == 64
        assert verify_checkpoint(c) == []


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":  # one bit in the middle: same size, different content
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "delete":
        path.unlink()
    elif how == "edit-meta":  # valid JSON, a changed number
        meta = json.loads(data)
        meta["step"] += 1
        path.write_text(json.dumps(meta))


DAMAGE = [("model.safetensors", "truncate"), ("model.safetensors", "flip"), ("optim.pt", "truncate"),
          ("optim.pt", "flip"), ("rng.pt", "flip"), ("rng.pt", "delete"), ("meta.json", "truncate"),
          ("meta.json", "edit-meta")]


@pytest.mark.parametrize(("name", "how"), DAMAGE, ids=[f"{n}-{h}" for n, h in DAMAGE])
def test_damaged_checkpoint_is_named_by_file_and_resume_falls_back(name, how, reference, tmp_path):
    """Damage one file of the last checkpoint of an interrupted run: loading names the file; resume
    warns, continues from the checkpoint before it, and ends bit-identical to the uninterrupted run."""
    cfg, data, ref = reference
    run = tmp_path / "run"
    _interrupted(cfg, data, run, stop_after_task=3)
    last = latest_checkpoint(run)
    assert last.name == "task-000003"
    _damage(last / name, how)
    problems = verify_checkpoint(last)
    assert problems and problems[0].startswith(name)
    model = GPT(build_gpt_config(cfg.model, data.vocab_size))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(last, model)
    with pytest.warns(CheckpointWarning, match=f"task-000003.*{name}"):
        assert latest_valid_checkpoint(run).name == "task-000002"
    with pytest.warns(CheckpointWarning):
        resume(run, data=data, quiet=True)
    assert read_json(run / "run.json")["status"] == "done"
    assert _final_hash(cfg, run, data) == _final_hash(cfg, ref, data)
    assert _metrics(run) == _metrics(ref)  # the rows after task-000002 were rolled back and written again
    assert verify_checkpoint(run / "checkpoints" / "task-000003") == []  # rewritten intact


def test_no_intact_checkpoint_is_an_error_not_a_silent_restart(reference, tmp_path, capsys):
    cfg, data, _ = reference
    run = tmp_path / "run"
    _interrupted(cfg, data, run, stop_after_task=0)
    _damage(run / "checkpoints" / "task-000000" / "optim.pt", "flip")
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match="no intact checkpoint"):
        resume(run, data=data, quiet=True)
    assert len(read_jsonl(run / "metrics.jsonl")) > 0  # nothing was rolled back


def test_a_checkpoint_that_does_not_fit_the_config_names_the_tensor(reference, tmp_path):
    """The position table: a checkpoint of seq_len 16 loaded into a model of seq_len 32."""
    cfg, data, ref = reference
    big = build_gpt_config(tiny_config("model.seq_len=32").model, data.vocab_size)
    with pytest.raises(PlasticError, match=r"wpe\.weight.*seq_len"):
        load_checkpoint(latest_checkpoint(ref), GPT(big))


# ---------------------------------------------------------------------------- full disk

ENOSPC_POINTS = ["save_model", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


@pytest.mark.parametrize("point", ENOSPC_POINTS)
def test_full_disk_during_a_checkpoint_keeps_the_previous_one_and_the_logs(point, reference, tmp_path, monkeypatch):
    """ENOSPC while writing the checkpoint after task 2 (at each of its writes): a clear error; the
    checkpoint of task 1, `latest` and metrics.jsonl stay as they were; freeing space and resuming
    ends bit-identical to the uninterrupted run."""
    cfg, data, ref = reference
    run = tmp_path / "run"
    real = getattr(ckpt_mod, point)
    state = {"armed": False}

    def full(*a, **k):
        if state["armed"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)

    from plasticlm.components import Component

    class Arm(Component):
        def on_task_end(self, loop, task):
            state["armed"] = task.index == 2

    monkeypatch.setattr(ckpt_mod, point, full)
    with pytest.raises(CheckpointError) as e:
        train(cfg, run, data=data, quiet=True, components=[Arm()])
    msg = str(e.value)
    assert "no space left on device" in msg and "task-000002" in msg and "task-000001" in msg
    assert "plasticlm resume" in msg
    assert latest_checkpoint(run).name == "task-000001" and verify_checkpoint(latest_checkpoint(run)) == []
    assert not list((run / "checkpoints").glob(".tmp-*"))
    if point != "atomic_write_text":  # the pointer is the last write: the new checkpoint itself is complete
        assert not (run / "checkpoints" / "task-000002").exists()
    rows = read_jsonl(run / "metrics.jsonl")
    assert rows == read_jsonl(run / "metrics.jsonl", strict=True)  # every line whole
    monkeypatch.setattr(ckpt_mod, point, real)
    resume(run, data=data, quiet=True)
    assert _final_hash(cfg, run, data) == _final_hash(cfg, ref, data)
    assert _metrics(run) == _metrics(ref)


class _FullDisk:
    """A file whose write stores half of the bytes, then fails with ENOSPC (as a full disk does)."""

    def __init__(self, f):
        self.f = f

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, b):
        self.f.write(b[: len(b) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_appending_a_log_row_leaves_no_torn_line(tmp_path, monkeypatch):
    import plasticlm.runlog as runlog_mod

    log = JsonlLog(tmp_path / "m.jsonl")
    log.append({"step": 1})
    real_open = runlog_mod.Path.open
    monkeypatch.setattr(runlog_mod.Path, "open", lambda self, *a, **k: _FullDisk(real_open(self, *a, **k)))
    with pytest.raises(OSError, match="No space left"):
        log.append({"step": 2, "loss": 1.5})
    monkeypatch.setattr(runlog_mod.Path, "open", real_open)
    assert (tmp_path / "m.jsonl").read_text() == '{"step": 1}\n'  # the half-written row was cut off
    log.append({"step": 3})
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl", strict=True)] == [1, 3]


def test_full_disk_in_the_cli_is_a_message_not_a_traceback(monkeypatch, capsys):
    import plasticlm.cli.presets as presets_cmd

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.jsonl")

    monkeypatch.setattr(presets_cmd, "run", full)
    assert main(["presets"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device writing /runs/x/metrics.jsonl" in err and "plasticlm resume" in err


def test_a_torn_last_line_never_swallows_the_next_row(tmp_path):
    path = tmp_path / "probes.jsonl"
    path.write_text('{"checkpoint": "a"}\n{"checkpoint": "b", "auc"')  # a writer killed mid-line
    JsonlLog(path).append({"checkpoint": "c"})
    assert [r["checkpoint"] for r in read_jsonl(path, strict=True)] == ["a", "c"]


# ---------------------------------------------------------------------------- two writers

HOLD = """
import sys, time
from plasticlm.runlock import run_lock
with run_lock(sys.argv[1], sys.argv[2], shared=sys.argv[3] == "1", create=True):
    print("held", flush=True)
    time.sleep(float(sys.argv[4]))
"""


def _holder(run_dir, command="train", shared=False, seconds=60.0):
    env = {**os.environ, "PYTHONPATH": str(Path(plasticlm.__file__).parents[1])}
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), command, "1" if shared else "0", str(seconds)],
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("locked")
    data = fake_data()
    cfg = tiny_config(*PROBE, "probe.in_run=false", "probe.scratch_baseline=false")
    train(cfg, d / "run", data=data, quiet=True)
    return cfg, data, d / "run"


@pytest.mark.parametrize("second", ["train", "resume", "probe", "probe-one"])
def test_a_second_writer_is_refused_naming_the_holder(second, done_run, capsys):
    cfg, data, run = done_run
    holder = _holder(run, "train")
    try:
        if second == "train":  # `train --overwrite` builds its data first, so the library is called with it
            with pytest.raises(RunLocked) as e:
                train(cfg, run, data=data, quiet=True, overwrite=True)
            err = str(e.value)
        else:
            argv = {"resume": ["resume", str(run), "--quiet"], "probe": ["probe", str(run), "--quiet"],
                    "probe-one": ["probe", str(run), "--checkpoint", "2", "--quiet"]}[second]
            assert main(argv) == 2
            err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and "`plasticlm train`" in err and "Traceback" not in err
        assert (run / "config.toml").exists() and read_json(run / "run.json")["status"] == "done"  # untouched
    finally:
        holder.kill()
        holder.wait()


def test_probe_array_jobs_share_the_lock_but_exclude_training(done_run):
    _, _, run = done_run
    job = _holder(run, "probe", shared=True)
    try:
        with run_lock(run, "probe", shared=True):  # a second array job runs beside the first
            pass
        with pytest.raises(RunLocked, match="`plasticlm probe`"), run_lock(run, "resume"):
            pass
    finally:
        job.kill()
        job.wait()


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(done_run):
    cfg, data, run = done_run
    holder = _holder(run, "resume")
    holder.kill()  # SIGKILL: no chance to let go; the kernel drops the flock, the file still names it
    holder.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid
    with pytest.warns(StaleLockWarning, match=f"PID {holder.pid}.*not running"):
        resume(run, data=data, quiet=True)
    assert (run / ".lock").read_text() == ""  # emptied on the way out: no stale holder named next time
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(run, data=data, quiet=True)


def test_overwrite_keeps_the_lock_file_it_holds(tmp_path):
    data = fake_data()
    cfg = tiny_config("stream.cycles=1")
    train(cfg, tmp_path / "run", data=data, quiet=True)
    inode = (tmp_path / "run" / ".lock").stat().st_ino
    train(cfg, tmp_path / "run", data=data, quiet=True, overwrite=True)
    assert (tmp_path / "run" / ".lock").stat().st_ino == inode  # never unlinked under a holder


# ---------------------------------------------------------------------------- concurrent probe rows


def _append_many(args):
    path, worker, n = args
    log = JsonlLog(path)
    for i in range(n):
        log.append({"checkpoint": f"w{worker}-{i}", "pad": "x" * (6000 if i % 10 == 0 else i)})
        log.append({"checkpoint": f"shared-{i}"}, unique_key="checkpoint")  # every worker offers the same row
    return n


def test_concurrent_appenders_never_lose_or_duplicate_a_row(tmp_path):
    """4 processes x 100 rows of their own (every tenth 6 kB, beyond one atomic pipe write), plus 100
    rows that every process offers: each own row exactly once, each offered row exactly once."""
    path = tmp_path / "probes.jsonl"
    with mp.get_context("fork").Pool(4) as pool:
        assert pool.map(_append_many, [(str(path), w, 100) for w in range(4)]) == [100] * 4
    names = [r["checkpoint"] for r in read_jsonl(path, strict=True)]
    assert len(names) == 4 * 100 + 100 and len(set(names)) == len(names)


REAL = ["data.source=synthetic", "data.synthetic_bytes=40000", "data.vocab_size=300", "model.preset=3K",
        "model.seq_len=16", "stream.languages=[en, fr, de]", "stream.tokens_per_task=640", "stream.cycles=1",
        "train.batch_size=4", "eval.sequences=4", "probe.after_languages=[]", "probe.in_run=false",
        "probe.every_tokens=640", "probe.scratch_baseline=false", *PROBE]


def test_post_hoc_probe_workers_write_each_row_once(tmp_path, home):
    """`plasticlm probe --workers 2` (spawned workers), then three array jobs at once, two of them on
    the same checkpoint: one row per probe point, none lost, none twice."""
    from plasticlm.config import load_config
    from plasticlm.probe import probe_run_dir

    run = tmp_path / "run"
    train(load_config(None, REAL), run, quiet=True)  # real (synthetic-source) data: workers load it
    rows = probe_run_dir(run, workers=2, progress=False)
    assert sorted(r["task_index"] for r in rows) == [1, 2, 3]
    assert sorted(r["task_index"] for r in read_jsonl(run / "probes.jsonl", strict=True)) == [1, 2, 3]
    (run / "probes.jsonl").write_text("")  # probe again, as array jobs
    env = {**os.environ, "PYTHONPATH": str(Path(plasticlm.__file__).parents[1])}
    jobs = [subprocess.Popen([sys.executable, "-m", "plasticlm", "probe", str(run), "--checkpoint", c, "--quiet"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in ("1", "1", "2")]
    outs = [j.communicate(timeout=600) for j in jobs]
    assert [j.returncode for j in jobs] == [0, 0, 0], outs
    names = [r["checkpoint"] for r in read_jsonl(run / "probes.jsonl", strict=True)]
    assert sorted(names) == ["task-000001", "task-000002"]


def test_resuming_an_unfinished_run_keeps_post_hoc_probe_rows(tmp_path):
    """probe.in_run = false: training writes no probe rows, so a resume must not roll back the rows
    that post-hoc probing appended after the checkpoint it resumes from."""
    data = fake_data()
    cfg = tiny_config(*PROBE, "probe.in_run=false", "probe.every_tokens=320", "probe.scratch_baseline=false")
    run = tmp_path / "run"
    from plasticlm.components import Component
    from plasticlm.probe import probe_run_dir

    class Stop(Component):
        def on_checkpoint(self, loop, path):
            if loop.task.index == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, data=data, quiet=True, components=[Stop()])
    probe_run_dir(run, data=data, progress=False)
    before = read_jsonl(run / "probes.jsonl")
    assert [r["task_index"] for r in before] == [1, 2, 3, 4]
    resume(run, data=data, quiet=True)
    assert read_jsonl(run / "probes.jsonl") == before
    probe_run_dir(run, data=data, progress=False)
    assert [r["task_index"] for r in read_jsonl(run / "probes.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_lock_holder_info(tmp_path):
    (tmp_path / "config.toml").write_text("")
    with run_lock(tmp_path, "probe") as me:
        info = json.loads((tmp_path / ".lock").read_text())
        assert info["pid"] == os.getpid() == me["pid"] and info["host"] and info["command"] == "probe"
        with pytest.raises(RunLocked), run_lock(tmp_path, "resume"):  # refused in the same process as well
            pass
    assert (tmp_path / ".lock").read_text() == ""


def test_a_prune_killed_mid_delete_leaves_no_headless_checkpoint(tmp_path, monkeypatch):
    """A kill while a checkpoint is being deleted (here: after its meta.json went) must not leave a
    task-* directory without meta.json: no later prune would see it (found by test_kill_random)."""
    root = tmp_path / "checkpoints"
    for i in range(4):
        (root / f"task-{i:06d}").mkdir(parents=True)
        (root / f"task-{i:06d}" / "meta.json").write_text("{}")
        (root / f"task-{i:06d}" / "model.safetensors").write_bytes(b"x")
    (root / "latest").write_text("task-000003")
    real_rmtree = ckpt_mod.shutil.rmtree

    def killed(path, ignore_errors=False):
        (Path(path) / "meta.json").unlink()
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoints(tmp_path, keep_last=2, pinned=set())
    assert all((p / "meta.json").exists() for p in root.glob("task-*"))  # the victim is set aside, hidden
    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", real_rmtree)
    assert prune_checkpoints(tmp_path, keep_last=2, pinned=set()) == ["task-000001"]
    assert sorted(os.listdir(root)) == ["latest", "task-000002", "task-000003"]
