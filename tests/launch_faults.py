"""A training job that fails on purpose, for tests/test_launch_retry.py: submitit pickles it by
reference, so each job process imports this module (kept small: it loads only what the job needs)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import submitit

from plasticlm.launch import TrainJob
from plasticlm.train import Trainer

FAULT_STEP = 8
"""The step at which a faulty attempt stops: inside task 1 of 5-step tasks, after checkpoint
task-000000 (step 5) and after the metrics row of step 6, which the resumed attempt must roll back
and write once."""


class FlakyTrainJob(TrainJob):
    """``TrainJob`` whose first ``failures`` calls fail (counted in the file ``calls``, since every call
    is a fresh process): ``how`` = "kill" (SIGKILL at step ``FAULT_STEP``, as a lost node), "preempt"
    (submitit's preemption signal at that step, what SLURM sends before a preemption or the time limit)
    or "raise" (an error before training)."""

    def __init__(self, calls: str, failures: int, how: str):
        self.calls, self.failures, self.how = calls, failures, how

    def __call__(self, run_dir: str, cfg_toml: str):
        calls = Path(self.calls)
        n = len(calls.read_text().splitlines()) if calls.exists() else 0
        with calls.open("a") as f:
            f.write(f"{os.getpid()}\n")
        if n < self.failures:
            if self.how == "raise":
                raise RuntimeError(f"simulated node failure (call {n + 1})")
            sig = signal.SIGKILL if self.how == "kill" else submitit.JobEnvironment._usr_sig()
            real = Trainer.train_step

            def train_step(trainer):
                if trainer.step == FAULT_STEP:
                    os.kill(os.getpid(), sig)
                return real(trainer)

            Trainer.train_step = train_step  # in this job's process only
        return super().__call__(run_dir, cfg_toml)
