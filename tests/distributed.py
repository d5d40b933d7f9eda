"""Run a training job on several CPU processes with the gloo backend (torch.multiprocessing spawn), as
torchrun would: MASTER_ADDR/PORT, RANK, WORLD_SIZE and LOCAL_RANK in each process's environment."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from plasticlm.components import Component


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Crash(Component):
    """Simulates a kill of every rank after a step (KeyboardInterrupt, as Ctrl-C or a preemption)."""

    name = "crash"

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_end(self, loop, loss):
        if loop.step == self.at_step:
            raise KeyboardInterrupt("simulated kill")


class PoisonRank(Component):
    """Makes one rank's forward output NaN from a given step on (the other ranks stay finite)."""

    name = "poison"

    def __init__(self, rank: int, at_step: int):
        self.rank, self.at_step = rank, at_step

    def on_fit_start(self, loop):
        if loop.rank != self.rank:
            return

        def hook(module, args, out):
            return out * float("nan") if loop.step >= self.at_step else out

        loop.model.ln_f.register_forward_hook(hook)


def _rank_main(rank: int, world: int, port: int, job: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from plasticlm import dist
    from plasticlm.errors import NonFiniteLoss
    from plasticlm.probe import probe_run_dir
    from plasticlm.train import resume, train
    from tests.fakes import fake_data, tiny_config

    components = []
    if job.get("crash_at"):
        components.append(Crash(job["crash_at"]))
    if job.get("poison"):
        components.append(PoisonRank(*job["poison"]))
    out = Path(job["run_dir"])
    try:
        if job["kind"] == "train":
            train(tiny_config(*job.get("overrides", [])), out, data=fake_data(), components=components, quiet=True)
        elif job["kind"] == "resume":
            resume(out, data=fake_data(), components=components, quiet=True, overrides=job.get("overrides"))
        elif job["kind"] == "probe":
            probe_run_dir(out, data=fake_data(), progress=False)
    except KeyboardInterrupt:
        pass
    except NonFiniteLoss:
        (out / f"nonfinite-rank{rank}").write_text("stopped\n")
    finally:
        dist.teardown()


def run_ranks(job: dict, world: int = 2, timeout: float = 900.0) -> None:
    """Run ``job`` on ``world`` processes; fail (instead of hanging) if they do not all end in time."""
    ctx = mp.start_processes(_rank_main, args=(world, free_port(), job), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.time() + timeout
    while not ctx.join(timeout=1.0):
        if time.time() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise TimeoutError(f"{world} ranks did not finish {job['kind']} within {timeout} s (a rank hangs)")
