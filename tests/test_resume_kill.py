"""Acceptance: a run killed with SIGKILL mid-task and resumed ends bit-identical to an uninterrupted one."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.numpy import load_file

from plasticlm.checkpoint import latest_checkpoint
from plasticlm.runlog import read_json, read_jsonl

ARGS = ["--set", "data.source=synthetic", "--set", "data.synthetic_bytes=60000", "--set", "data.vocab_size=320",
        "--set", "model.preset=25K", "--set", "model.seq_len=32", "--set", "stream.languages=[en,fr,de]",
        "--set", "stream.tokens_per_task=7680", "--set", "stream.cycles=2", "--set", "train.batch_size=4",
        "--set", "eval.sequences=4", "--set", "probe.after_languages=[]", "--set", "probe.steps=5",
        "--set", "probe.eval_every=5", "--set", "probe.sequences=4", "--quiet"]


def _cli(*args, env):
    return subprocess.Popen([sys.executable, "-m", "plasticlm", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _tensor_hash(run_dir: Path) -> str:
    tensors = load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].tobytes())
    return h.hexdigest()


def _rows(run_dir: Path):
    return [{k: v for k, v in r.items() if not k.endswith(("tokens_per_s", "seconds"))}
            for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_sigkill_mid_task_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "PLASTICLM_HOME": str(tmp_path / "home"), "PYTHONHASHSEED": "0"}
    a, b = tmp_path / "a", tmp_path / "b"
    p = _cli("train", str(Path(__file__).parents[1] / "configs" / "demo.toml"),
             *ARGS, "--run-dir", str(a), env=env)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert read_json(a / "run.json")["status"] == "done"

    p = _cli("train", str(Path(__file__).parents[1] / "configs" / "demo.toml"), *ARGS, "--run-dir", str(b), env=env)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and p.poll() is None:
        rows = read_jsonl(b / "metrics.jsonl")
        if rows and rows[-1]["step"] >= 75:  # task 1 of 6 (60 steps each) is in progress
            os.kill(p.pid, signal.SIGKILL)
            killed_at = rows[-1]["step"]
            break
        time.sleep(0.01)
    p.wait(timeout=60)
    assert killed_at is not None and p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert read_json(b / "run.json")["status"] == "running"  # it never got to finish
    assert latest_checkpoint(b).name == "task-000000"

    p = _cli("resume", str(b), "--quiet", env=env)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert read_json(b / "run.json")["status"] == "done"
    assert _tensor_hash(b) == _tensor_hash(a)
    assert _rows(b) == _rows(a)  # identical final metrics, no duplicated or missing rows
    assert read_jsonl(b / "probes.jsonl") and [r["auc"] for r in read_jsonl(b / "probes.jsonl")] == [
        r["auc"] for r in read_jsonl(a / "probes.jsonl")]
