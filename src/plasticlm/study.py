"""`plasticlm study`: one command from corpus to report, resumable at every stage.

Stages: data (corpus, tokenizer, token shards; cached) -> sweep (train every run, continual and,
when configured, stationary) -> probes still missing -> onsets -> scaling-law fit -> report.
Each stage skips what is already done, so re-running an interrupted study continues it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from plasticlm.config import Config
from plasticlm.data.prepare import prepare_data
from plasticlm.launch import resource_plan
from plasticlm.plan import plan_study
from plasticlm.report.build import make_report
from plasticlm.runspec import expand
from plasticlm.sweep import StudyLog, run_status, run_sweep


def dry_run(cfg: Config) -> dict[str, Any]:
    """What the study would do: runs with their status, and the compute plan (nothing is run).

    The plan is made from the same run specs (``runspec.expand``) and each planned run is matched
    to its spec by name."""
    study_dir = Path(cfg.sweep.out_dir)
    specs = {s.name: s for s in expand(cfg)}
    plan = plan_study(cfg, gpu="h100", specs=list(specs.values()))
    runs = []
    for rp in plan.runs:
        spec = specs[rp.name]
        runs.append({"name": spec.name, "method": spec.method, "status": run_status(spec.run_dir(study_dir)),
                     "tokens": rp.tokens, "steps": rp.steps, "probes": rp.probes + rp.scratch_probes,
                     "non_embedding_params": rp.non_embedding_params, "train_flops": rp.train_flops})
    return {"study_dir": str(study_dir), "source": cfg.data.source,
            "stages": ["data", "train", "probe", "onsets_and_fit", "report"], "runs": runs,
            "totals": plan.totals()}


def dry_run_jobs(cfg: Config) -> dict[str, Any]:
    """``dry_run`` plus the cluster jobs `--launcher slurm` would submit, per preset."""
    plan = dry_run(cfg)
    plan["stages"] = ["data", "train_and_probe_jobs", "probe", "onsets_and_fit", "report"]
    plan["jobs"] = resource_plan(cfg)
    return plan


def run_study(cfg: Config, *, config_path: str | None = None, parallel: int | None = None, quiet: bool = False,
              data: Any = None, launcher: str = "local", cluster: str | None = None) -> dict[str, Any]:
    """Run every stage; return the sweep summary with the report path and the report's summary text.
    ``launcher``/``cluster``: as in ``run_sweep`` (local process pool, or submitit job arrays)."""

    study_dir = Path(cfg.sweep.out_dir)
    t0 = time.perf_counter()
    if data is None:
        if not quiet:
            print(f"[study] preparing data ({cfg.data.source})", file=sys.stderr)
        data = prepare_data(cfg, progress=not quiet)
    data_s = time.perf_counter() - t0
    # spawned workers and cluster jobs load the (now cached) data themselves
    in_process = (parallel or cfg.sweep.parallel) <= 1 and launcher == "local"
    summary = run_sweep(cfg, study_dir, config_path=config_path, parallel=parallel, quiet=quiet,
                        data=data if in_process else None, launcher=launcher, cluster=cluster)
    t1 = time.perf_counter()
    log = StudyLog(study_dir, cfg, config_path)
    log.stage("report", "running")
    report = make_report(study_dir)
    log.stage("report", "done", time.perf_counter() - t1)
    summary["report"] = str(report.index)
    summary["report_summary"] = report.summary
    summary["seconds"] = {"data": round(data_s, 1), "total": round(time.perf_counter() - t0, 1),
                          "report": round(time.perf_counter() - t1, 1)}
    return summary
