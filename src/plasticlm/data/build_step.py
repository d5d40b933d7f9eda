"""The datatrove side of the shard build (``build.py``): the pipeline step, and the entry point of the
build process.

``python -m plasticlm.data.build_step JOB.pkl`` runs datatrove's ``LocalPipelineExecutor`` over the
job's (language, task) ranks in a process of its own: datatrove starts its workers with
``forkserver``, which re-imports the main module, so it must not be the user's script (or a training
process holding torch threads). A module of its own so that datatrove is imported only here.
"""

from __future__ import annotations

import pickle
import sys

from datatrove.pipeline.base import PipelineStep


class ShardTasks(PipelineStep):
    """One datatrove rank = one (language, task) of the shard build: ``build.run_task``."""

    name = "plasticlm shard tasks"
    type = "tokenize"

    def __init__(self, builds: list):
        super().__init__()
        self.builds = builds

    def run(self, data, rank: int = 0, world_size: int = 1):
        from plasticlm.data.build import run_task, task_list

        b, t = task_list(self.builds)[rank]
        doc = run_task(b, t)
        self.stat_update("tokens", value=sum(s["tokens"] for s in doc["splits"].values()))
        return data


def main(job_path: str) -> int:
    from plasticlm.data.build import make_executor

    with open(job_path, "rb") as f:
        data, builds, logging_dir = pickle.load(f)
    make_executor(data, builds, logging_dir).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
