"""`--launcher slurm` when jobs fail (issue 17, Deliver 4; launch.py's "Failures"), on submitit's local
executor (jobs are local processes; the same submitter, job classes and retry loop as on SLURM).

The faults are injected by ``tests.launch_faults.FlakyTrainJob``, a subclass of the training job that
the launcher is made to submit here: on its first calls it kills its own process at a training step (a
lost node: SIGKILL), sends itself the preemption signal (what SLURM sends before a preemption or the
time limit), or raises before training. Nothing in src/ knows about it.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import submitit

import plasticlm.launch
from plasticlm.config import load_config
from plasticlm.probe import probe_run_dir
from plasticlm.runlog import read_json, read_jsonl
from plasticlm.runspec import expand
from plasticlm.sweep import run_sweep
from plasticlm.train import load_data, train
from tests.fakes import LOOP_ONLY
from tests.launch_faults import FlakyTrainJob
from tests.test_kill_random import outcome

pytestmark = pytest.mark.timeout(1200)  # under a minute each alone; longer on a shared machine

RUN = ["data.source=synthetic", "data.synthetic_bytes=60000", "data.tokenizer=bytes", "model.seq_len=32",
       "stream.languages=[en,fr,de]", "stream.tokens_per_task=640", "stream.cycles=2", "train.batch_size=4",
       "train.threads=1", "train.log_every=2", "eval.sequences=4", "eval.batch_size=4", "probe.after_languages=[]",
       LOOP_ONLY, "probe.steps=2", "probe.eval_every=1", "probe.sequences=4", "probe.bootstrap=20",
       "probe.scratch_baseline=false", "sweep.presets=[25K]", "sweep.seeds=[0]", "slurm.gpus_per_run=0",
       "slurm.max_retries=2"]
"""One run of 6 tasks x 5 steps on the 25K preset, a checkpoint after each task, no probes in the run
(the launcher submits training jobs only; the sweep then probes the last checkpoint, briefly)."""
NAME = "25K-s0-continual"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A shared $PLASTICLM_HOME with the data built once, and the uninterrupted run's outcome."""
    root = tmp_path_factory.mktemp("retry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLASTICLM_HOME", str(root / "home"))
        cfg = load_config(None, RUN)
        spec = expand(cfg)[0]
        assert spec.name == NAME
        train(spec.cfg, root / "reference", data=load_data(spec.cfg, progress=False), quiet=True)
        probe_run_dir(root / "reference", progress=False)  # what the sweep does after its jobs
        ref = outcome(root / "reference")
        assert ref["status"] == "done" and ref["latest"] == "task-000005"
        yield root, ref


def _flaky(monkeypatch, tmp_path, failures: int, how: str) -> Path:
    """Make the launcher submit ``FlakyTrainJob``; the file that counts its calls."""
    calls = tmp_path / "calls"
    monkeypatch.setattr(plasticlm.launch, "TrainJob", functools.partial(FlakyTrainJob, str(calls), failures, how))
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)  # a killed job leaves no result: 1 s, not 15
    return calls


def _sweep(tmp_path, *extra: str, quiet: bool = True) -> dict:
    cfg = load_config(None, [*RUN, *extra, f"sweep.out_dir={tmp_path / 'study'}"])
    return run_sweep(cfg, quiet=quiet, launcher="slurm", cluster="local")


def _starts(run: Path) -> list[int]:
    """The step each training attempt started at (train.log: one "start at step S of N" per attempt)."""
    return [int(s) for s in re.findall(r"start at step (\d+) of", (run / "logs" / "train.log").read_text())]


@pytest.mark.parametrize("how", ["kill", pytest.param("preempt", marks=pytest.mark.slow)])  # one in CI: time
def test_a_failed_or_preempted_job_resumes_from_its_last_checkpoint(how, bench, tmp_path, monkeypatch):
    """kill: the job dies after its first checkpoint (as on a lost node); the submitting process sees the
    failure and resubmits the run, which resumes at step 5 and ends as the uninterrupted run, bit for bit.
    preempt: submitit requeues the job itself (``Checkpointable``); no resubmission, the same ending."""
    _root, ref = bench
    calls = _flaky(monkeypatch, tmp_path, failures=1, how=how)
    jobs = _sweep(tmp_path)["jobs"]
    run = tmp_path / "study" / "runs" / NAME
    assert len(calls.read_text().splitlines()) == 2  # the faulty call and the one that finished
    if how == "kill":  # resubmitted once by the launcher
        assert [a["jobs"] for a in jobs["attempts"]] == [1, 1]
        (error,) = jobs["attempts"][0]["failed_jobs"]
        assert "the job ended without a result (killed?): has not produced any output" in error and "_log.err" in error
        assert jobs["attempts"][1]["failed_jobs"] == []
    else:  # requeued inside its job by submitit: not a failure, not a retry
        assert [(a["jobs"], a["failed_jobs"]) for a in jobs["attempts"]] == [(1, [])]
    assert jobs["unfinished"] == []
    assert _starts(run) == [0, 5]  # the second attempt resumed at task-000000 (step 5), not from the start
    rows = read_jsonl(run / "metrics.jsonl")
    assert len({json.dumps(r, sort_keys=True) for r in rows}) == len(rows)  # no row twice
    assert [r["step"] for r in rows] == [r["step"] for r in ref["metrics"]]  # the faulty attempt's step-6 row once
    assert outcome(run) == ref  # weights bit for bit, every metrics row, the checkpoints kept


@pytest.mark.slow  # make test's time; the kill test covers resubmission in CI
def test_a_job_that_keeps_failing_is_reported_after_max_retries(bench, tmp_path, monkeypatch, capsys):
    calls = _flaky(monkeypatch, tmp_path, failures=99, how="raise")
    summary = _sweep(tmp_path, "slurm.max_retries=1", quiet=False)
    assert len(calls.read_text().splitlines()) == 2  # the job and one resubmission, then no more
    jobs = summary["jobs"]
    assert [a["attempt"] for a in jobs["attempts"]] == [0, 1] and jobs["unfinished"] == [NAME]
    err = capsys.readouterr().err
    for i, a in enumerate(jobs["attempts"]):  # the line that says what went wrong, and where the log is
        (error,) = a["failed_jobs"]
        assert f": RuntimeError: simulated node failure (call {i + 1}) (log: " in error
        assert error in err
    assert f"runs not finished after 1 resubmission(s): {NAME}" in err and "run the study again" in err
    study = read_json(tmp_path / "study" / "study.json")
    assert study["stages"]["train_and_probe_jobs"]["status"] == "incomplete"
    assert [o["code"] for o in summary["onsets"]] == ["not_finished"]


def test_a_run_stopped_by_a_non_finite_loss_is_final_not_resubmitted(bench, tmp_path, monkeypatch):
    calls = _flaky(monkeypatch, tmp_path, failures=0, how="raise")  # counts the calls, fails none
    bad = ("optim.lr=1e30", "optim.grad_clip=0")
    jobs = _sweep(tmp_path, *bad)["jobs"]
    assert len(calls.read_text().splitlines()) == 1
    assert [(a["jobs"], a["failed_jobs"]) for a in jobs["attempts"]] == [(1, [])] and jobs["unfinished"] == []
    info = read_json(tmp_path / "study" / "runs" / NAME / "run.json")
    assert info["status"] == "failed" and "non-finite" in info["error"]
    assert [r["status"] for r in read_json(tmp_path / "study" / "study.json")["runs"]] == ["failed"]
    assert _sweep(tmp_path, *bad)["jobs"]["attempts"] == []  # the study run again submits nothing
    assert len(calls.read_text().splitlines()) == 1
