"""Slow end-to-end checks on the real debian-docs corpus (`make test-slow`; needs apt-get)."""

import json
import shutil

import pytest

from plasticlm.cli import main
from plasticlm.runlog import read_jsonl

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("apt-get") is None, reason="debian-docs needs apt-get")]


def test_micro_run_on_debian_docs_with_two_cycles_probes_and_onset(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "configs/demo.toml", "--run-dir", str(run), "--quiet",
               "--set", "model.preset=25K", "--set", "stream.cycles=2", "--set", "stream.tokens_per_task=32768",
               "--set", "probe.at_cycle_end=true", "--set", "probe.after_languages=[zh, de, ru]",
               "--set", "probe.steps=20", "--set", "probe.eval_every=5"])
    assert rc == 0
    rows = read_jsonl(run / "probes.jsonl")
    assert [r["task_index"] for r in rows] == [2, 6, 8, 10, 14, 16]
    assert all(len(r["curve"]) == 5 and r["curve"][0][0] == 0 for r in rows)
    capsys.readouterr()
    assert main(["onset", str(run), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"onset_task_index", "onset_tokens", "ci95", "smoothed"} <= set(doc) and len(doc["smoothed"]) == 4
