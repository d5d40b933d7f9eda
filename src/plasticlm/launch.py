"""A study's runs and post-hoc probes as cluster jobs (``--launcher slurm``), through submitit.

For each preset one job array trains its runs (every seed, stream and method), and one job array
probes their saved checkpoints (``probe.in_run = false``: one array task per probe point,
``plasticlm probe RUN_DIR --checkpoint NAME``), submitted at once with a SLURM dependency
(``afterany`` on the training array), so probes follow their runs without the submitting process.
Resources per preset come from the study's compute plan (``plan.py``: FLOPs / (MFU x the GPU's peak)
x ``slurm.time_factor``, capped at ``slurm.max_minutes``).

Failures:

- a job that reaches its time limit or is preempted is requeued by submitit (``Checkpointable``:
  SLURM signals it before the end) and resumes from the run's last checkpoint, or skips the probes
  already written; this does not count as a retry;
- a job that fails otherwise (a node lost, out of memory) is resubmitted, up to
  ``slurm.max_retries`` times, by the submitting process, which waits for the arrays and then looks
  at the run directories (the truth: run.json and probes.jsonl), not at job states;
- a run stopped by a non-finite loss is final (status ``failed``: resuming would repeat the same
  steps) and is reported, not resubmitted.

The same code runs on submitit's local executor (``cluster = "local"``: jobs as local processes),
which has no dependencies: there the submitting process waits for the training jobs before it
submits the probes. ``plasticlm probe RUN_DIR --print-jobs`` prints the probe commands for any other
scheduler.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from plasticlm import dist
from plasticlm.checkpoint import checkpoint_name, checkpoints_dir
from plasticlm.config import Config, dumps_toml, loads_toml
from plasticlm.data.needs import served_tokens_per_task
from plasticlm.data.stream import task_count
from plasticlm.plan import GPU_PEAK_TFLOPS, RunPlan, plan_study
from plasticlm.probe import probe_run_dir, probe_task_indices
from plasticlm.rundir import run_status
from plasticlm.runlog import read_jsonl
from plasticlm.runspec import RunSpec
from plasticlm.train import train_or_resume

STARTUP_MINUTES = 10
"""Added to every time limit: interpreter and data loading, checkpoint writes, evaluation jitter."""
CLUSTER_ENV = "PLASTICLM_SUBMITIT_CLUSTER"
"""Names submitit's executor when set (``local``, ``debug``, ``slurm``); otherwise submitit detects it."""

# ---------------------------------------------------------------------- the jobs


class TrainJob(submitit.helpers.Checkpointable):
    """Train (or resume) one run; with several tasks per job, each task is one torch.distributed rank.
    Requeued at its time limit or on preemption, the same call resumes the run (``Checkpointable``)."""

    def __call__(self, run_dir: str, cfg_toml: str) -> dict[str, Any]:
        if submitit.JobEnvironment().num_tasks > 1:  # RANK, WORLD_SIZE, MASTER_ADDR/PORT as torchrun sets them
            submitit.helpers.TorchDistributedEnvironment().export()
        try:
            return train_or_resume(Path(run_dir), loads_toml(cfg_toml), quiet=True)
        finally:
            dist.teardown()


class ProbeJob(submitit.helpers.Checkpointable):
    """Probe one checkpoint of a run (nothing when it is already probed or was never written)."""

    def __call__(self, run_dir: str, name: str) -> dict[str, Any]:
        if not (checkpoints_dir(run_dir) / name / "meta.json").exists():
            return {"run_dir": run_dir, "checkpoint": name, "status": "missing"}
        rows = probe_run_dir(run_dir, checkpoint=name, progress=False)
        return {"run_dir": run_dir, "checkpoint": name, "status": "probed" if rows else "already probed"}


# ---------------------------------------------------------------------- resources


def job_resources(cfg: Config, kind: str, plan_run: RunPlan) -> dict[str, Any]:
    """submitit parameters of one training or probe job of a preset (``plan_run``: its RunPlan)."""
    sl = cfg.slurm
    gpus = sl.gpus_per_run if kind == "train" else min(sl.gpus_per_run, 1)
    if kind == "train":
        flops = plan_run.train_flops + plan_run.eval_flops + (plan_run.probe_flops if cfg.probe.in_run else 0.0)
    else:  # one probe point: its share of the probe FLOPs, and a third more for its validation
        flops = plan_run.probe_flops / max(1, plan_run.probes + plan_run.scratch_probes) * 4 / 3
    if gpus > 0:
        minutes = flops / (sl.mfu * GPU_PEAK_TFLOPS[sl.gpu] * 1e12 * gpus) / 60 * sl.time_factor + STARTUP_MINUTES
    else:  # a CPU-only cluster: no peak to plan from; the longest limit, and requeueing beyond it
        minutes = sl.max_minutes
    params: dict[str, Any] = {
        "timeout_min": int(min(sl.max_minutes, max(STARTUP_MINUTES, round(minutes)))),
        "gpus_per_node": gpus,
        "tasks_per_node": max(1, gpus),
        "cpus_per_task": sl.cpus_per_gpu,
        "mem_gb": sl.mem_gb_per_gpu * max(1, gpus),
        "nodes": 1,
        "slurm_array_parallelism": sl.array_parallelism,
    }
    for key in ("partition", "account", "qos"):
        if getattr(sl, key):
            params[f"slurm_{key}"] = getattr(sl, key)
    if sl.extra:
        params["slurm_additional_parameters"] = dict(sl.extra)
    return params


def resource_plan(cfg: Config) -> list[dict[str, Any]]:
    """Per preset: the training and probe job resources (what ``study --dry-run --launcher slurm`` shows)."""
    plan = plan_study(cfg, gpu=cfg.slurm.gpu, mfu=cfg.slurm.mfu)
    out = []
    for preset in dict.fromkeys(r.preset for r in plan.runs):
        run = next(r for r in plan.runs if r.preset == preset)
        train, probe = job_resources(cfg, "train", run), job_resources(cfg, "probe", run)
        out.append({"preset": preset, "train_minutes": train["timeout_min"], "gpus_per_run": train["gpus_per_node"],
                    "mem_gb": train["mem_gb"], "probe_minutes": probe["timeout_min"] if not cfg.probe.in_run else None,
                    "probes_per_run": run.probes})
    return out


# ---------------------------------------------------------------------- what is left to do


def planned_probe_checkpoints(cfg: Config, run_dir: Path) -> list[str]:
    """Checkpoints a post-hoc probe will need (from the probe schedule, before they exist) that have
    no row in probes.jsonl yet."""
    if cfg.probe.in_run:
        return []
    points = probe_task_indices(cfg, task_count(cfg.stream), len(cfg.stream.languages), served_tokens_per_task(cfg))
    done = {r["checkpoint"] for r in read_jsonl(run_dir / "probes.jsonl")}
    return [checkpoint_name(k) for k in points if checkpoint_name(k) not in done]


# ---------------------------------------------------------------------- the driver


def job_error(e: Exception) -> str:
    """What ended a failed job, in one line: the exception it raised (the last line of the traceback in
    submitit's FailedJobError, between its two dashed lines), or, for a job that left no result (its
    process killed: a lost node, out of memory), submitit's "has not produced any output" line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if isinstance(e, submitit.core.utils.FailedJobError):
        dashes = [i for i, ln in enumerate(lines) if set(ln) == {"-"}]
        if len(dashes) >= 2 and dashes[-1] - dashes[0] > 1:
            return lines[dashes[-1] - 1]
    no_output = [ln for ln in lines if ln.startswith("has not produced any output")]
    if no_output:
        return f"the job ended without a result (killed?): {no_output[0]}"
    return lines[-1] if lines else repr(e)


class ClusterLauncher:
    """Submits job arrays through a submitit executor (``cluster``: None = detect, "slurm", "local",
    "debug"), waits for them and resubmits what failed."""

    def __init__(self, cfg: Config, study_dir: Path, cluster: str | None = None, quiet: bool = False):
        self.cfg, self.study_dir, self.quiet = cfg, study_dir, quiet
        folder = Path(cfg.slurm.folder) if cfg.slurm.folder else study_dir / "slurm"
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.cluster = self.executor.cluster
        self.plans = {r.name: r for r in plan_study(cfg, gpu=cfg.slurm.gpu, mfu=cfg.slurm.mfu).runs}

    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{self.cluster}] {msg}", file=sys.stderr)

    def _submit(self, kind: str, spec: RunSpec, calls: list[tuple], after: list[Any]) -> list[Any]:
        """One job array (``calls``: argument tuples) for ``spec``'s preset, after the jobs ``after``."""
        params = job_resources(self.cfg, kind, self.plans[spec.name])
        params["name"] = f"plasticlm-{kind}-{spec.preset}"
        if after and self.cluster == "slurm":
            params["slurm_dependency"] = "afterany:" + ":".join(str(j.job_id) for j in after)
        elif after:  # executors without dependencies: the submitting process waits instead
            self._wait(after)
        self.executor.update_parameters(**params)
        fn = TrainJob() if kind == "train" else ProbeJob()
        with self.executor.batch():
            jobs = [self.executor.submit(fn, *args) for args in calls]
        self._say(f"submitted {len(jobs)} {kind} job(s) for {spec.preset}: {', '.join(j.job_id for j in jobs)}")
        return jobs

    def _wait(self, jobs: list[Any]) -> list[str]:
        """Wait for jobs; returns the errors of those that failed (their run directories decide what
        is retried)."""
        errors = []
        for job in jobs:
            try:
                job.result()
            except Exception as e:  # noqa: BLE001 - any failure of a job is recorded and retried
                errors.append(f"job {job.job_id}: {job_error(e)} (log: {job.paths.stderr})")
        return errors

    def run(self, specs: list[RunSpec]) -> dict[str, Any]:
        attempts = []
        for attempt in range(self.cfg.slurm.max_retries + 1):
            train_todo = [s for s in specs if run_status(s.run_dir(self.study_dir)) not in ("done", "failed")]
            probe_todo = {s.name: planned_probe_checkpoints(s.cfg, s.run_dir(self.study_dir)) for s in specs
                          if run_status(s.run_dir(self.study_dir)) != "failed"}
            probe_todo = {k: v for k, v in probe_todo.items() if v}
            if not train_todo and not probe_todo:
                break
            t0 = time.perf_counter()
            jobs: list[Any] = []
            for preset in dict.fromkeys(s.preset for s in specs):
                group = [s for s in train_todo if s.preset == preset]
                train_jobs = self._submit("train", group[0], [(str(s.run_dir(self.study_dir)), dumps_toml(s.cfg))
                                                              for s in group], []) if group else []
                probes = [(str(s.run_dir(self.study_dir)), name) for s in specs if s.preset == preset
                          for name in probe_todo.get(s.name, [])]
                first = next(s for s in specs if s.preset == preset)
                probe_jobs = self._submit("probe", first, probes, train_jobs) if probes else []
                jobs += train_jobs + probe_jobs
            errors = self._wait(jobs)
            attempts.append({"attempt": attempt, "jobs": len(jobs), "failed_jobs": errors,
                             "seconds": round(time.perf_counter() - t0, 1)})
            if errors:
                self._say(f"{len(errors)} job(s) failed: " + "; ".join(errors[:5]))
        left = [s.name for s in specs if run_status(s.run_dir(self.study_dir)) not in ("done", "failed")]
        if left:
            self._say(f"runs not finished after {self.cfg.slurm.max_retries} resubmission(s): {', '.join(left)} "
                      f"(job logs under {self.executor.folder}); run the study again to continue them")
        return {"launcher": "slurm", "cluster": self.cluster, "folder": str(self.executor.folder),
                "attempts": attempts, "unfinished": left}


def run_on_cluster(cfg: Config, specs: list[RunSpec], study_dir: Path, quiet: bool = False,
                   cluster: str | None = None) -> dict[str, Any]:
    """Train and probe the study's runs as job arrays; returns what was submitted and what failed."""
    return ClusterLauncher(cfg, study_dir, cluster or os.environ.get(CLUSTER_ENV) or None, quiet).run(specs)
