"""The datatrove side of the shard build (``build.py``): the pipeline step, the executors, and the entry
point of the build process.

``python -m plasticlm.data.build_step JOB.pkl`` runs datatrove's ``LocalPipelineExecutor`` over the
job's (language, task) ranks in a process of its own: datatrove starts its workers with
``forkserver``, which re-imports the main module, so it must not be the user's script (or a training
process holding torch threads). ``--submit JOB.pkl`` submits the same ranks as a SLURM array job
(``data.executor = "slurm"``). A module of its own so that datatrove is imported only here.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from plasticlm.data.build import LangBuild, run_task, task_list, workers


class ShardTasks(PipelineStep):
    """One datatrove rank = one (language, task) of the shard build: ``build.run_task``."""

    name = "plasticlm shard tasks"
    type = "tokenize"

    def __init__(self, builds: list):
        super().__init__()
        self.builds = builds

    def run(self, data, rank: int = 0, world_size: int = 1):
        b, t = task_list(self.builds)[rank]
        doc = run_task(b, t)
        self.stat_update("tokens", value=sum(s["tokens"] for s in doc["splits"].values()))
        return data


def make_executor(data, builds: list[LangBuild], logging_dir: Path):
    """datatrove's local executor (data.workers processes) or its SLURM executor (data.executor = slurm)."""
    n = len(task_list(builds))
    step = ShardTasks(builds)
    # complete tasks are skipped by their own markers (run_task), which outlive datatrove's logs
    if data.executor == "slurm":
        from datatrove.executor.slurm import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline=[step], tasks=n, time=data.slurm_time, partition=data.slurm_partition, cpus_per_task=1,
            mem_per_cpu_gb=data.slurm_mem_per_cpu_gb, workers=data.workers or -1, job_name="plasticlm-shards",
            logging_dir=str(logging_dir), env_command=data.slurm_env_command or None, skip_completed=False,
        )
    from datatrove.executor.local import LocalPipelineExecutor

    return LocalPipelineExecutor(pipeline=[step], tasks=n, workers=min(n, workers(data)),
                                 logging_dir=str(logging_dir), skip_completed=False, start_method="forkserver")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m plasticlm.data.build_step")
    parser.add_argument("job", help="the pickled job written by plasticlm.data.build")
    parser.add_argument("--submit", action="store_true", help="submit to SLURM instead of running locally")
    args = parser.parse_args(argv)
    with open(args.job, "rb") as f:
        data, builds, logging_dir = pickle.load(f)
    make_executor(data, builds, logging_dir).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
