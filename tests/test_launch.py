"""`--launcher slurm`: the study's runs and post-hoc probes as submitit job arrays, run here through
submitit's local executor (the same code path; jobs are local processes), and what sbatch receives."""

from __future__ import annotations

import csv
import json
import os

import pytest

from plasticlm.cli import main
from plasticlm.config import load_config
from plasticlm.launch import ClusterLauncher, job_resources, planned_probe_checkpoints, resource_plan
from plasticlm.plan import plan_study
from plasticlm.runlog import read_json, read_jsonl
from plasticlm.runspec import expand
from plasticlm.study import run_study
from plasticlm.train import train
from tests.fakes import WITH_PROBES, fake_data, tiny_config

STUDY = ["data.source=synthetic", "data.synthetic_bytes=60000", "data.vocab_size=320", "model.seq_len=32",
         "stream.languages=[en, fr, de]", "stream.tokens_per_task=2560", "stream.cycles=2", "train.batch_size=4",
         "eval.sequences=4", "probe.after_languages=[]", "probe.steps=4",
         "probe.eval_every=2", "probe.sequences=4", "probe.bootstrap=20", "probe.in_run=false",
         "probe.scratch_baseline=false", "sweep.presets=[3K, 25K]", "slurm.gpus_per_run=0", "train.threads=1"]


def test_resources_per_preset_come_from_the_plan():
    cfg = load_config(None, ["sweep.presets=[5M, 314M]", "probe.in_run=false", "slurm.partition=gpu",
                             "slurm.extra={constraint = 'h100'}", "slurm.max_minutes=100000"])
    plan = {r.preset: r for r in plan_study(cfg, gpu="h100", mfu=0.4).runs}
    small, big = (job_resources(cfg, "train", plan[p]) for p in ("5M", "314M"))
    assert big["timeout_min"] > small["timeout_min"] >= 10
    expected = plan["314M"].train_flops + plan["314M"].eval_flops
    assert big["timeout_min"] == round(expected / (0.4 * 989e12) / 60 * 2.0 + 10)
    assert big["slurm_partition"] == "gpu" and big["slurm_additional_parameters"] == {"constraint": "h100"}
    assert big["gpus_per_node"] == 1 and big["mem_gb"] == 64
    capped = load_config(None, ["sweep.presets=[314M]", "stream.tokens_per_task=5000000000", "slurm.max_minutes=60"])
    assert resource_plan(capped)[0]["train_minutes"] == 60  # longer runs requeue themselves at their limit
    with pytest.raises(Exception, match="dist.strategy"):
        load_config(None, ["slurm.gpus_per_run=4"])


def test_planned_probe_checkpoints_follow_the_schedule(tmp_path):
    cfg = load_config(None, STUDY)
    assert planned_probe_checkpoints(cfg, tmp_path) == ["task-000002", "task-000005"]  # the cycle ends
    (tmp_path / "probes.jsonl").write_text('{"checkpoint": "task-000002"}\n')
    assert planned_probe_checkpoints(cfg, tmp_path) == ["task-000005"]
    assert planned_probe_checkpoints(load_config(None, [*STUDY, "probe.in_run=true"]), tmp_path) == []


@pytest.mark.timeout(1800)  # about a minute alone; much longer on a shared machine
def test_two_preset_study_on_submitit_local_executor_runs_to_its_report(tmp_path, home):
    cfg = load_config(None, [*STUDY, f"sweep.out_dir={tmp_path / 'study'}"])
    summary = run_study(cfg, quiet=True, launcher="slurm", cluster="local")
    study = tmp_path / "study"
    assert (study / "report" / "index.html").exists()
    jobs = summary["jobs"]
    assert jobs["cluster"] == "local" and jobs["unfinished"] == []
    assert jobs["attempts"][0]["jobs"] == 2 + 2 * 2 and jobs["attempts"][0]["failed_jobs"] == []
    for name in ("3K-s0-continual", "25K-s0-continual"):
        run = study / "runs" / name
        assert read_json(run / "run.json")["status"] == "done"
        rows = read_jsonl(run / "probes.jsonl")
        assert sorted(r["checkpoint"] for r in rows) == ["task-000002", "task-000005"]  # one job each
    with open(study / "onsets.csv") as f:
        codes = [r["code"] for r in csv.DictReader(f)]
    assert len(codes) == 2 and not set(codes) & {"not_finished", "no_probes"}
    assert read_json(study / "study.json")["stages"]["train_and_probe_jobs"]["status"] == "done"
    assert list((study / "slurm").glob("*_log.out"))  # submitit's job logs
    # a second study submits nothing: every run is done and every probe point probed; and it continues
    # under other [dist]/[slurm] values, which say how it runs, not what it computes
    again = run_study(load_config(None, [*STUDY, f"sweep.out_dir={study}", "slurm.partition=other"]), quiet=True,
                      launcher="slurm", cluster="local")
    assert again["jobs"]["attempts"] == []


def test_probe_print_jobs_prints_one_command_per_pending_probe(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tiny_config(WITH_PROBES, "probe.in_run=false", "probe.steps=2", "probe.eval_every=1", "probe.sequences=4",
                      "probe.scratch_baseline=false")
    train(cfg, out, data=fake_data(), quiet=True)
    assert main(["probe", str(out), "--print-jobs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"plasticlm probe {out} --checkpoint task-{k:06d}" for k in (2, 5)]
    (out / "probes.jsonl").write_text(json.dumps({"checkpoint": "task-000002"}) + "\n")
    assert main(["probe", str(out), "--print-jobs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"] == [f"plasticlm probe {out} --checkpoint task-000005"]


def test_slurm_arrays_carry_the_plan_resources_and_probes_depend_on_runs(tmp_path, monkeypatch):
    """What sbatch receives (a stand-in sbatch on PATH records the scripts; no cluster needed)."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\nn=$(ls {scripts} | wc -l)\ncp "$1" {scripts}/$n.sh\necho "Submitted batch job $((100 + n))"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cfg = load_config(None, ["sweep.presets=[314M]", "probe.in_run=false", "slurm.partition=gpu",
                             "slurm.extra={constraint = 'h100'}", "slurm.gpus_per_run=4", "dist.strategy=fsdp",
                             f"sweep.out_dir={tmp_path / 'study'}"])
    spec = expand(cfg)[0]
    launcher = ClusterLauncher(cfg, tmp_path / "study", cluster="slurm", quiet=True)
    run_dir = str(spec.run_dir(tmp_path / "study"))
    train_jobs = launcher._submit("train", spec, [(run_dir, "toml")], [])
    probes = launcher._submit("probe", spec, [(run_dir, "task-000002"), (run_dir, "task-000005")], train_jobs)
    assert [j.job_id for j in train_jobs] == ["100"] and [j.job_id for j in probes] == ["101_0", "101_1"]
    first, second = ((scripts / f"{i}.sh").read_text() for i in range(2))
    for line in ("--partition=gpu", "--constraint=h100", "--gpus-per-node=4", "--ntasks-per-node=4",
                 "--mem=256GB", "--job-name=plasticlm-train-314M"):
        assert f"#SBATCH {line}" in first, line
    assert "--dependency" not in first
    assert "#SBATCH --dependency=afterany:100" in second and "#SBATCH --array=0-1%2" in second
    assert "#SBATCH --gpus-per-node=1" in second  # a probe trains a copy on one GPU
