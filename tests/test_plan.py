import json
from pathlib import Path

import pytest

from plasticlm.cli import main
from plasticlm.config import load_config
from plasticlm.errors import PlasticError
from plasticlm.model import flops_per_token, from_preset, non_embedding_params
from plasticlm.plan import plan_study, probe_token_positions

ROOT = Path(__file__).resolve().parents[1]

SMALL = [
    "model.preset=25K", "model.seq_len=10", "stream.languages=[en, fr, de]", "stream.tokens_per_task=1000",
    "stream.cycles=2", "train.batch_size=2", "probe.steps=5", "probe.eval_every=2", "probe.sequences=4",
    "probe.after_languages=[fr, de]", "eval.sequences=2", "sweep.presets=[25K]", "sweep.seeds=[0]",
]


def test_small_plan_is_hand_checkable():
    cfg = load_config(None, SMALL)
    # after fr (slot 1) and de (slot 2, the cycle end, counted once) in each of 2 cycles of 3 x 1000 tokens
    assert probe_token_positions(cfg) == [2000, 3000, 5000, 6000]
    plan = plan_study(cfg, mfu=0.5, peak_tflops=100.0)
    (r,) = plan.runs
    fpt = flops_per_token(from_preset("25K", vocab_size=1024, seq_len=10))
    assert r.flops_per_token == fpt and r.non_embedding_params == non_embedding_params(from_preset("25K"))
    assert r.tokens == 6000 and r.steps == 6 * 50  # 1000 tokens / (2 x 10) per task
    assert (r.probes, r.scratch_probes) == (4, 1)
    assert r.probe_tokens == 5 * 100  # 5 probes x 5 steps x 2 x 10 tokens
    assert r.train_flops == fpt * 6000
    assert r.probe_flops == fpt * 500
    # probe validation: steps 0, 2, 4, 5 = 4 evals x 4 seqs x 10 tokens x 5 probes = 800 tokens;
    # training validation: (6 tasks + step 0) x (3 + 1 languages) x 2 seqs x 10 tokens = 560; forward = F / 3
    assert r.eval_flops == pytest.approx(fpt / 3 * 1360)
    assert r.gpu_hours == pytest.approx(r.total_flops / (0.5 * 100e12) / 3600)
    assert plan.totals()["total_flops"] == r.total_flops


def test_stationary_twin_every_tokens_and_vocab():
    cfg = load_config(None, SMALL + ["sweep.stationary=true", "sweep.seeds=[0, 1]"])
    plan = plan_study(cfg)
    assert [(r.seed, r.stream, r.probes, r.scratch_probes) for r in plan.runs] == [
        (0, "continual", 4, 1), (0, "stationary", 4, 0), (1, "continual", 4, 1), (1, "stationary", 4, 0)]
    assert plan.runs[1].steps == 300
    cfg = load_config(None, SMALL + ["probe.every_tokens=2500", "probe.scratch_baseline=false"])
    assert probe_token_positions(cfg) == [3000, 5000]  # at the task boundaries that reach 2500 and 5000
    cfg = load_config(None, SMALL + ["probe.at_cycle_end=false", "probe.after_languages=[de]"])
    assert probe_token_positions(cfg) == [3000, 6000]
    with pytest.raises(PlasticError, match="not in stream.languages"):
        load_config(None, SMALL + ["probe.after_languages=[de, xx]"])
    cfg = load_config(None, SMALL + ["data.vocab_size=400", "model.vocab_size=500"])  # model.vocab_size wins
    assert plan_study(cfg).runs[0].flops_per_token == flops_per_token(from_preset("25K", 500, 10))


def test_bad_mfu_and_gpu():
    cfg = load_config(None, SMALL)
    with pytest.raises(PlasticError, match="mfu"):
        plan_study(cfg, mfu=1.5)
    with pytest.raises(PlasticError, match="unknown GPU 'tpu'"):
        plan_study(cfg, gpu="tpu")


def test_cli_plan_paper_continual_json(capsys):
    assert main(["plan", str(ROOT / "configs/paper/continual.toml"), "--gpu", "h200", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpu"] == "h200" and doc["peak_tflops"] == 989.0 and doc["mfu"] == 0.4
    assert [r["preset"] for r in doc["runs"]] == ["5M", "12M", "27M", "39M", "53M", "83M", "106M", "314M"]
    r = doc["runs"][-1]
    assert r["non_embedding_params"] == 314_859_520
    assert r["tokens"] == 48 * 8 * 9537 * 256 * 2048  # whole 0.5M-token steps: 9,537 per 5B-token task
    assert r["steps"] == 48 * 8 * 9537
    assert r["probes"] == 48 * 3 and r["scratch_probes"] == 1
    assert r["probe_tokens"] == 145 * 9537 * 256 * 2048
    assert doc["totals"]["runs"] == 8


def test_cli_plan_paper_stationary_human(capsys):
    assert main(["plan", str(ROOT / "configs/paper/stationary.toml")]) == 0
    out = capsys.readouterr().out
    assert "stationary" in out and "GPU-hours" in out
    cfg = load_config(ROOT / "configs/paper/stationary.toml")
    assert len(probe_token_positions(cfg)) == 48
