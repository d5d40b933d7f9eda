"""SIGKILL at random moments of training, post-hoc probing and a sweep, and during checkpoint writes
(issue 18, item 1): after each kill, `resume` (or the same `probe` / `sweep` command run again)
completes, and the final weights (bit for bit), metrics.jsonl rows, probes.jsonl rows and per-sequence
probe losses equal those of an uninterrupted run (wall-time fields left out).

Kill moments: a trial at a random moment kills its command after a delay drawn uniformly between 5%
and 95% of the uninterrupted command's measured duration (halved, up to three times, when the
command ends first: the trial needs a kill). A trial aimed at a write makes the command SIGKILL
itself at one step of it (tests/kill_child.py: ``HOOKS``), at the n-th checkpoint or probe row, n
drawn at random. Every draw comes from ``PLASTICLM_KILL_SEED`` (default 18), so that
``PLASTICLM_KILL_SEED=7 pytest -m faults tests/test_kill_random.py`` repeats the suite with kills at
other moments (the held-out check of issue 18).

The commands run as forked children of a forkserver that imported torch once (tests/kill_child.py);
every run is tiny (3 languages x 2 cycles x 5 steps of the 25K preset on the synthetic source).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from plasticlm.checkpoint import checkpoint_name, latest_checkpoint, list_checkpoints, verify_checkpoint
from plasticlm.config import dumps_toml, load_config
from plasticlm.runlog import read_json, read_jsonl
from tests import kill_child

pytestmark = pytest.mark.faults

SEED = int(os.environ.get("PLASTICLM_KILL_SEED", "18"))
TIMEOUT = 600.0  # seconds a command may take on a very busy machine before the test fails

RUN = ["data.source=synthetic", "data.synthetic_bytes=60000", "data.tokenizer=bytes", "model.preset=25K",
       "model.seq_len=32", "stream.languages=[en,fr,de]", "stream.tokens_per_task=640", "stream.cycles=2",
       "train.batch_size=4", "train.threads=1", "train.log_every=2", "eval.sequences=4", "eval.batch_size=4",
       "probe.after_languages=[]", "probe.steps=4", "probe.eval_every=2", "probe.sequences=4", "probe.bootstrap=20"]
"""6 tasks of 5 steps, a checkpoint after each (the last two kept), probes at the 2 cycle ends."""
POST_HOC = [*RUN, "probe.in_run=false", "probe.after_languages=[fr]"]
"""Probed post hoc at 4 checkpoints (after fr and at the cycle ends)."""
SWEEP = [*POST_HOC[:-1], "sweep.presets=[3K,25K]", "sweep.seeds=[0]", "sweep.parallel=1"]
"""Two runs, trained, then probed post hoc by the sweep (at the 2 cycle ends), then onsets and the fit."""
WALL = ("tokens_per_s", "seconds")


def rng_for(kind: str, i: int | str) -> random.Random:
    return random.Random(f"{SEED}/{kind}/{i}")


# ---------------------------------------------------------------------------- children


class Bench:
    """The forkserver, the shared data cache, the configs, and the uninterrupted references."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["tests.kill_child"])
        self.configs = {}
        for name, sets in (("train", RUN), ("post_hoc", POST_HOC), ("sweep", SWEEP)):
            path = root / f"{name}.toml"
            path.write_text(dumps_toml(load_config(None, sets)))
            self.configs[name] = str(path)
        self.seconds: dict[str, float] = {}

    def start(self, argv: list[str], hook: tuple[str, int] | None = None) -> mp.Process:
        p = self.ctx.Process(target=kill_child.run_cli, args=(argv, str(self.home), hook))
        p.start()
        return p

    def run(self, argv: list[str], hook: tuple[str, int] | None = None) -> int:
        """Run ``plasticlm ARGV`` to its end; its exit status (-9 when a hook killed it)."""
        p = self.start(argv, hook)
        p.join(TIMEOUT)
        assert not p.is_alive(), f"`plasticlm {' '.join(argv)}` did not end in {TIMEOUT} s"
        return p.exitcode

    def timed(self, key: str, argv: list[str]) -> None:
        t0 = time.perf_counter()
        assert self.run(argv) == 0, f"`plasticlm {' '.join(argv)}` failed"
        self.seconds[key] = time.perf_counter() - t0

    def kill_at_random(self, key: str, argv: list[str], rng: random.Random, fresh) -> float:
        """Start ``argv`` (after ``fresh()`` prepared its target) and SIGKILL it after a random share
        of the reference's duration; the delay in seconds."""
        u = rng.uniform(0.05, 0.95)
        for _ in range(4):
            fresh()
            p = self.start(argv)
            delay = u * self.seconds[key]
            p.join(delay)
            if p.is_alive():
                p.kill()
            p.join(TIMEOUT)
            if p.exitcode == -signal.SIGKILL:
                return delay
            assert p.exitcode == 0, f"`plasticlm {' '.join(argv)}` failed before its kill"
            u /= 2  # it ended first (a less busy machine than the reference's): an earlier moment
        pytest.fail(f"`plasticlm {' '.join(argv)}` always ended before its kill moment")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    b = Bench(tmp_path_factory.mktemp("kill"))
    assert b.run(["corpus", "build", b.configs["train"], "--tokens"]) == 0  # the data, once, for every command
    return b


# ---------------------------------------------------------------------------- what must be equal


def _weights(ckpt: Path) -> str:
    tensors = load_file(str(ckpt / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].tobytes())
    return h.hexdigest()


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith(WALL)} for r in read_jsonl(path)]


def _npz(run: Path) -> dict[str, list[str]]:
    out = {}
    for p in sorted((run / "probes").glob("*.npz")):
        with np.load(p) as z:
            out[p.name] = [f"{k}:{hashlib.sha256(z[k].tobytes()).hexdigest()}" for k in sorted(z.files)]
    return out


def outcome(run: Path) -> dict:
    """What a finished run leaves, without wall times: compared with the uninterrupted run's."""
    latest = latest_checkpoint(run)
    assert latest is not None, f"{run}: no checkpoint"
    for c in list_checkpoints(run):
        assert verify_checkpoint(c) == [], c
    return {
        "status": read_json(run / "run.json")["status"],
        "checkpoints": sorted(os.listdir(run / "checkpoints")),  # no temporary or set-aside directory left
        "latest": latest.name,
        "weights": _weights(latest),
        "metrics": _rows(run / "metrics.jsonl"),
        "probes": _rows(run / "probes.jsonl"),
        "npz": _npz(run),
    }


def study_outcome(study: Path) -> dict:
    runs = {p.name: outcome(p) for p in sorted((study / "runs").iterdir())}
    return {"runs": runs, "onsets.csv": (study / "onsets.csv").read_text(),
            "sizes.csv": (study / "sizes.csv").read_text(), "fit.json": read_json(study / "fit.json"),
            "statuses": [r["status"] for r in read_json(study / "study.json")["runs"]]}


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def train_ref(bench):
    run = bench.root / "train-ref"
    bench.timed("train", ["train", bench.configs["train"], "--run-dir", str(run), "--quiet"])
    ref = outcome(run)
    assert ref["status"] == "done" and len(ref["probes"]) == 2 and ref["latest"] == "task-000005"
    return ref


def _recover(bench: Bench, run: Path) -> None:
    """What a user does after a kill: `resume`, or `train` again when the kill came before the run
    directory held its config (nothing was started)."""
    if (run / "config.toml").exists():
        argv = ["resume", str(run), "--quiet"]
    else:
        argv = ["train", bench.configs["train"], "--run-dir", str(run), "--quiet"]
    assert bench.run(argv) == 0, f"`plasticlm {' '.join(argv)}` failed after the kill"


@pytest.mark.parametrize("trial", range(3))
def test_train_killed_at_a_random_moment_resumes_to_the_same_run(trial, bench, train_ref, tmp_path):
    run = tmp_path / "run"
    argv = ["train", bench.configs["train"], "--run-dir", str(run), "--quiet"]
    bench.kill_at_random("train", argv, rng_for("train", trial), lambda: shutil.rmtree(run, ignore_errors=True))
    _recover(bench, run)
    assert outcome(run) == train_ref


WRITES = [(point, None) for point in kill_child.CHECKPOINT_HOOKS] + [("after", 6)]
"""Each step at a checkpoint drawn at random; and once after the last checkpoint (a resume that only
has the bookkeeping left: PLASTICLM_KILL_SEED=7 found it did not prune)."""


@pytest.mark.parametrize(("point", "fixed"), WRITES, ids=[p if n is None else f"{p}-{n}" for p, n in WRITES])
def test_train_killed_while_writing_a_checkpoint_resumes_to_the_same_run(point, fixed, bench, train_ref, tmp_path):
    nth = fixed or rng_for("checkpoint", point).randint(1, 6)  # which of the 6 checkpoints
    run = tmp_path / "run"
    code = bench.run(["train", bench.configs["train"], "--run-dir", str(run), "--quiet"], hook=(point, nth))
    assert code == -signal.SIGKILL, f"the hook at {point} (checkpoint {nth}) never fired"
    assert read_json(run / "run.json")["status"] == "running"
    # the checkpoint resume starts from: the one before (task nth - 2), or, once the new one is in
    # place and `latest` names it, that one; with no `latest` yet the complete directory is listed
    last = nth - 1 if point == "after" or (point == "latest" and nth == 1) else nth - 2
    before = latest_checkpoint(run)
    assert (before.name if before else None) == (checkpoint_name(last) if last >= 0 else None)
    _recover(bench, run)
    assert outcome(run) == train_ref


def test_train_killed_while_replacing_a_checkpoint_resumes_to_the_same_run(bench, train_ref, tmp_path):
    """Two kills: one after a checkpoint is renamed into place but before `latest` names it, so that
    the resumed run re-reaches that boundary; then one while the resumed run replaces it (the old copy
    set aside, the new one not yet in place)."""
    nth = rng_for("swap", 0).randint(2, 6)
    run = tmp_path / "run"
    assert bench.run(["train", bench.configs["train"], "--run-dir", str(run), "--quiet"],
                     hook=("latest", nth)) == -signal.SIGKILL
    assert bench.run(["resume", str(run), "--quiet"], hook=("swap", 1)) == -signal.SIGKILL
    assert list((run / "checkpoints").glob(".old-*")), "the second kill did not land while replacing"
    _recover(bench, run)
    assert outcome(run) == train_ref


# ---------------------------------------------------------------------------- post-hoc probes


@pytest.fixture(scope="module")
def probe_ref(bench):
    src = bench.root / "post-hoc-src"
    assert bench.run(["train", bench.configs["post_hoc"], "--run-dir", str(src), "--quiet"]) == 0
    assert not read_jsonl(src / "probes.jsonl")
    ref = bench.root / "post-hoc-ref"
    shutil.copytree(src, ref)
    bench.timed("probe", ["probe", str(ref), "--quiet"])
    out = outcome(ref)
    assert len(out["probes"]) == 4 and len(out["npz"]) == 4
    return src, out


def _fresh_copy(src: Path, run: Path):
    def fresh():
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(src, run)
    return fresh


@pytest.mark.parametrize("trial", range(2))
def test_probe_killed_at_a_random_moment_completes_on_the_next_probe(trial, bench, probe_ref, tmp_path):
    src, ref = probe_ref
    run = tmp_path / "run"
    bench.kill_at_random("probe", ["probe", str(run), "--quiet"], rng_for("probe", trial), _fresh_copy(src, run))
    assert bench.run(["probe", str(run), "--quiet"]) == 0
    assert outcome(run) == ref


@pytest.mark.parametrize("point", kill_child.PROBE_HOOKS)
def test_probe_killed_while_writing_its_results_completes_on_the_next_probe(point, bench, probe_ref, tmp_path):
    src, ref = probe_ref
    run = tmp_path / "run"
    _fresh_copy(src, run)()
    nth = rng_for("probe-hook", point).randint(1, 4)
    assert bench.run(["probe", str(run), "--quiet"], hook=(point, nth)) == -signal.SIGKILL
    assert len(read_jsonl(run / "probes.jsonl")) == nth - 1  # a torn row is not a row
    assert bench.run(["probe", str(run), "--quiet"]) == 0
    assert outcome(run) == ref


# ---------------------------------------------------------------------------- the sweep


@pytest.fixture(scope="module")
def sweep_ref(bench):
    study = bench.root / "sweep-ref"
    bench.timed("sweep", ["sweep", bench.configs["sweep"], "--out-dir", str(study), "--quiet"])
    ref = study_outcome(study)
    assert ref["statuses"] == ["done", "done"] and all(len(r["probes"]) == 2 for r in ref["runs"].values())
    return ref


@pytest.mark.parametrize("trial", range(2))
def test_sweep_killed_at_a_random_moment_completes_when_run_again(trial, bench, sweep_ref, tmp_path):
    study = tmp_path / "study"
    argv = ["sweep", bench.configs["sweep"], "--out-dir", str(study), "--quiet"]
    bench.kill_at_random("sweep", argv, rng_for("sweep", trial), lambda: shutil.rmtree(study, ignore_errors=True))
    assert bench.run(argv) == 0
    assert study_outcome(study) == sweep_ref
