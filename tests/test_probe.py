import json

import numpy as np
import pytest

from plasticlm.analysis import onset_from_run
from plasticlm.checkpoint import latest_checkpoint, list_checkpoints, weights_hash
from plasticlm.cli import main
from plasticlm.config import load_config
from plasticlm.probe import ProbeSetup, probe_run_dir, probe_task_indices, run_probe, scratch_baseline
from plasticlm.runlog import read_json, read_jsonl
from plasticlm.train import Trainer, resume, train
from tests.fakes import LOOP_ONLY, WITH_PROBES, fake_data, patch_everywhere, tiny_config

PROBE = ("probe.steps=6", "probe.eval_every=2", "probe.sequences=4", WITH_PROBES)


def _final_hash(cfg, run_dir, data):
    t = Trainer(cfg, run_dir, data, quiet=True)
    t.restore(latest_checkpoint(run_dir))
    return weights_hash(t.model)


def test_paper_schedule_cycle_ends_and_after_zh_de_ru():
    cfg = load_config(None)  # paper language order, probes after zh, de, ru and at cycle ends
    assert probe_task_indices(cfg, 24, 8, 1000) == [1, 5, 7, 9, 13, 15, 17, 21, 23]
    cfg = load_config(None, ["stream.kind=stationary", "probe.at_cycle_end=false", "probe.after_languages=[]",
                             "probe.every_tokens=2500"])
    assert probe_task_indices(cfg, 8, 8, 1000) == [2, 4, 7]


def test_training_weights_bit_identical_with_probes_on_and_off(tmp_path, home):
    data = fake_data()
    cfg = tiny_config(*PROBE)
    train(cfg, tmp_path / "on", data=data, quiet=True)
    train(tiny_config(*PROBE, LOOP_ONLY), tmp_path / "off", data=data, quiet=True)  # no probe component at all
    rows = read_jsonl(tmp_path / "on" / "probes.jsonl")
    assert [r["task_index"] for r in rows] == [3, 6]  # after each cycle (3 languages)
    assert not (tmp_path / "off" / "probes.jsonl").exists()
    assert _final_hash(cfg, tmp_path / "on", data) == _final_hash(cfg, tmp_path / "off", data)
    r = rows[0]
    assert [s for s, _ in r["curve"]] == [0, 2, 4, 6]
    assert r["auc"] > 0 and r["final_loss"] < r["curve"][0][1]  # the copy learns the probe language
    assert r["scratch_auc"] > 0 and r["dauc_scratch"] == pytest.approx(100 * (r["auc"] / r["scratch_auc"] - 1))
    with np.load(tmp_path / "on" / r["per_sequence"]) as z:
        assert z["per_sequence"].shape == (4, 4)
    assert read_json(tmp_path / "on" / "run.json")["scratch"]["auc"] == r["scratch_auc"]


def test_probe_leaves_model_and_rng_untouched(tmp_path, home):
    import torch

    data = fake_data()
    cfg = tiny_config(*PROBE)
    t = Trainer(cfg, tmp_path / "r", data, quiet=True)
    before = weights_hash(t.model)
    rng = torch.get_rng_state()
    setup = ProbeSetup.build(cfg, data, t.gpt_config, t.peak_lr, t.device)
    a = run_probe(t.model, setup)
    assert weights_hash(t.model) == before and torch.equal(torch.get_rng_state(), rng)
    b = run_probe(t.model, setup)
    assert a.auc == b.auc  # same probe tokens and validation sequences every time


def test_scratch_baseline_is_cached(tmp_path, home, monkeypatch):
    data = fake_data()
    cfg = tiny_config(*PROBE)
    t = Trainer(cfg, tmp_path / "r", data, quiet=True)
    setup = ProbeSetup.build(cfg, data, t.gpt_config, t.peak_lr, t.device)
    first = scratch_baseline(setup, seed=0)
    import plasticlm.probe as probe_mod

    monkeypatch.setattr(probe_mod, "run_probe", lambda *a, **k: pytest.fail("scratch baseline recomputed"))
    assert scratch_baseline(setup, seed=0) == first


def test_posthoc_probe_skips_probed_checkpoints_and_onset_answers(tmp_path, home, capsys):
    data = fake_data()
    cfg = tiny_config(*PROBE, "probe.in_run=false", "probe.every_tokens=320", "train.keep_last=1", "stream.cycles=3")
    train(cfg, tmp_path / "run", data=data, quiet=True)
    assert len(list_checkpoints(tmp_path / "run")) == 9  # every probe point is pinned
    assert not (tmp_path / "run" / "probes.jsonl").exists()
    rows = probe_run_dir(tmp_path / "run", data=data, progress=False)
    assert [r["task_index"] for r in rows] == list(range(1, 10))
    assert probe_run_dir(tmp_path / "run", data=data, progress=False) == []  # nothing the second time
    one = probe_run_dir(tmp_path / "run", data=data, progress=False, checkpoint="task-000004")
    assert one == []  # already probed
    doc = onset_from_run(tmp_path / "run", n_boot=50)
    assert set(doc) >= {"onset_task_index", "onset_tokens", "method", "window", "ci95", "smoothed"}
    assert len(doc["smoothed"]) == 7 and doc["window"] == 3
    assert main(["onset", str(tmp_path / "run"), "--json", "--bootstrap", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == doc["method"] and len(out["scores"]) == 9
    if out["onset_task_index"] is not None:
        assert out["onset_tokens"] == out["onset_task_index"] * 320


def test_probe_cli_errors(tmp_path, capsys):
    assert main(["probe", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["onset", "--scores", "x.csv", str(tmp_path)]) == 2


def test_permuted_stream_probes_a_held_out_permutation(tmp_path, home):
    from plasticlm.data.prepare import default_languages

    cfg = tiny_config(*PROBE, "stream.kind=permuted", "stream.permuted_base=aa")
    assert default_languages(cfg) == ["aa", "vi"]  # task names are labels; only the base is trained
    data = fake_data()
    train(cfg, tmp_path / "perm", data=data, quiet=True)
    rows = read_jsonl(tmp_path / "perm" / "probes.jsonl")
    assert [r["task_index"] for r in rows] == [3, 6] and all(r["lang"] == "aa" for r in rows)
    t = Trainer(cfg, tmp_path / "x", data, quiet=True)
    setup = ProbeSetup.build(cfg, data, t.gpt_config, t.peak_lr, t.device, t.stream.probe_permutation())
    from plasticlm.evaluate import fixed_windows

    assert setup.lang == "aa"
    assert np.array_equal(setup.val_windows, setup.permutation[fixed_windows(data.val["aa"], 4, 16)])


def test_resuming_a_finished_run_keeps_post_hoc_probe_rows(tmp_path, home):
    from plasticlm.probe import pending_checkpoints

    data = fake_data()
    cfg = tiny_config(*PROBE, "probe.in_run=false")
    train(cfg, tmp_path / "run", data=data, quiet=True)
    assert len(probe_run_dir(tmp_path / "run", data=data, progress=False)) == 2
    resume(tmp_path / "run", data=data, quiet=True)
    assert len(read_jsonl(tmp_path / "run" / "probes.jsonl")) == 2
    assert pending_checkpoints(tmp_path / "run") == []
    assert read_json(tmp_path / "run" / "run.json")["scratch"]["auc"] > 0  # recorded by post-hoc probing


def test_in_run_probes_need_no_pinned_checkpoints(tmp_path, home):
    train(tiny_config(*PROBE, "train.keep_last=1"), tmp_path / "run", data=fake_data(), quiet=True)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["task-000005"]
    assert len(read_jsonl(tmp_path / "run" / "probes.jsonl")) == 2


def test_a_diverging_probe_is_recorded_not_fatal(tmp_path, home, monkeypatch):
    import json

    import plasticlm.step as step_mod
    from plasticlm.analysis import load_probes
    from plasticlm.data.stream import Task
    from plasticlm.errors import NonFiniteLoss
    from plasticlm.probe import probe_row

    real = step_mod.clip_and_step

    def poisoned(model, optimizer, loss, grad_clip, step):
        if step == 3:
            raise NonFiniteLoss("non-finite loss (nan) at step 3; the weights were not updated")
        return real(model, optimizer, loss, grad_clip, step)

    data = fake_data()
    cfg = tiny_config(*PROBE)
    t = Trainer(cfg, tmp_path / "r", data, quiet=True)
    setup = ProbeSetup.build(cfg, data, t.gpt_config, t.peak_lr, t.device)
    patch_everywhere(monkeypatch, "clip_and_step", poisoned)
    result = run_probe(t.model, setup)  # returns instead of raising
    assert result.auc is None and "probe step 3" in result.diverged and result.eval_steps == [0, 2]
    row = probe_row("task-000002", Task(2, 0, 2, "cc", True, True), 100, result, None)
    assert row["diverged"] and row["auc"] is None and row["dauc_scratch"] is None
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "probes.jsonl").write_text(json.dumps(row) + "\n")
    assert load_probes(tmp_path / "run") == []  # kept in the file, left out of the score curve
