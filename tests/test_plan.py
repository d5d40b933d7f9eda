import json
from pathlib import Path

import pytest

from plasticlm.cli import main
from plasticlm.config import load_config
from plasticlm.errors import PlasticError
from plasticlm.model import flops_per_token, from_preset, non_embedding_params
from plasticlm.plan import plan_data, plan_study, probe_token_positions
from plasticlm.runspec import expand

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
    # every_tokens adds probes at the task boundaries that reach 2500 and 5000 (to fr/de and the cycle ends)
    cfg = load_config(None, SMALL + ["probe.every_tokens=2500", "probe.scratch_baseline=false"])
    assert probe_token_positions(cfg) == [2000, 3000, 5000, 6000]
    cfg = load_config(None, SMALL + ["probe.every_tokens=2500", "probe.at_cycle_end=false", "probe.after_languages=[]"])
    assert probe_token_positions(cfg) == [3000, 5000]
    cfg = load_config(None, SMALL + ["probe.at_cycle_end=false", "probe.after_languages=[de]"])
    assert probe_token_positions(cfg) == [3000, 6000]
    with pytest.raises(PlasticError, match="not in stream.languages"):
        load_config(None, SMALL + ["probe.after_languages=[de, xx]"])
    cfg = load_config(None, SMALL + ["data.vocab_size=400", "model.vocab_size=500"])  # model.vocab_size wins
    assert plan_study(cfg).runs[0].flops_per_token == flops_per_token(from_preset("25K", 500, 10))


def test_stationary_control_on_some_presets_with_its_own_probe_grid():
    cfg = load_config(None, SMALL + ["sweep.presets=[25K, 85K, 200K]", "sweep.stationary=true",
                                     "sweep.stationary_presets=[25K, 85K]", "sweep.stationary_probe_every_tokens=1000"])
    plan = plan_study(cfg)
    assert [(r.preset, r.stream, r.probes, r.scratch_probes) for r in plan.runs] == [
        ("25K", "continual", 4, 1), ("25K", "stationary", 6, 0), ("85K", "continual", 4, 1),
        ("85K", "stationary", 6, 0), ("200K", "continual", 4, 1)]


def test_data_plan_reuse_is_an_error_unless_allowed():
    # each of en, fr, de is read for 2 cycles x 1000 tokens = 2000; the probe reads 5 x 2 x 10 = 100 of vi
    targets = ["data.train_tokens=1500", "data.val_tokens=100", "data.train_tokens_per_language={vi = 400}"]
    with pytest.raises(PlasticError, match=r"more than once: en 1.33x \(2,000 of 1,500 tokens\)"):
        plan_data(load_config(None, SMALL + targets))
    d = plan_data(load_config(None, SMALL + targets + ["stream.allow_reuse=true"]), tokens_per_cpu_s=100.0)
    assert {r["lang"]: (r["train_tokens"], r["need_tokens"]) for r in d.languages} == {
        "en": (1500, 2000), "fr": (1500, 2000), "de": (1500, 2000), "vi": (400, 100)}
    assert d.reuse == pytest.approx({"en": 4 / 3, "fr": 4 / 3, "de": 4 / 3, "vi": 0.25})
    assert d.tokens == 3 * 1600 + 500 and d.disk_bytes == d.tokens * 2  # uint16 at vocab 1,024
    assert d.peak_disk_bytes == d.disk_bytes + 1600 * 2 and d.cpu_hours == pytest.approx(d.tokens / 100 / 3600)
    unknown = plan_data(load_config(None, SMALL))  # no targets: every document, sizes known once built
    assert unknown.tokens is None and unknown.reuse == {} and unknown.languages[0]["need_tokens"] == 2000


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
    ladder = ["5M", "12M", "27M", "39M", "53M", "83M", "106M", "314M"]
    assert [(r["preset"], r["stream"]) for r in doc["runs"]] == [
        (p, s) for p in ladder for s in (["continual", "stationary"] if p in ("5M", "12M", "27M") else ["continual"])]
    r = doc["runs"][-1]
    assert r["non_embedding_params"] == 314_859_520
    assert r["tokens"] == 48 * 8 * 9537 * 256 * 2048  # whole 0.5M-token steps: 9,537 per 5B-token task
    assert r["steps"] == 48 * 8 * 9537
    assert r["probes"] == 48 * 3 and r["scratch_probes"] == 1
    assert r["probe_tokens"] == 145 * 9537 * 256 * 2048
    stationary = [r for r in doc["runs"] if r["stream"] == "stationary"]
    # every 5B tokens: every task instance of 48 x 8; the scratch probe is shared with the continual twin
    assert [(r["probes"], r["scratch_probes"]) for r in stationary] == [(384, 0)] * 3
    assert doc["totals"]["runs"] == 11
    data = {r["lang"]: r for r in doc["data"]["languages"]}
    assert data["en"]["train_tokens"] == 100e9 and data["en"]["val_tokens"] == 1e9
    assert data["vi"]["train_tokens"] == 20e9 and data["en"]["reuse"] == pytest.approx(2.4, rel=1e-3)
    assert doc["data"]["tokens"] == 8 * 101e9 + 21e9 and doc["data"]["disk_bytes"] == doc["data"]["tokens"] * 4


def test_cli_plan_paper_stationary_human(capsys):
    assert main(["plan", str(ROOT / "configs/paper/stationary.toml")]) == 0
    out = capsys.readouterr().out
    assert "stationary" in out and "GPU-hours" in out and "CPU-hours to tokenize" in out
    assert "data reuse (stream.allow_reuse = true): en 2.40x" in out
    cfg = load_config(ROOT / "configs/paper/stationary.toml")
    specs = expand(cfg)
    assert [s.name for s in specs] == [f"{p}-s0-{k}" for p in ("5M", "12M", "27M") for k in ("continual", "stationary")]
    stat = specs[1].cfg
    assert stat.stream.kind == "stationary" and stat.probe.every_tokens == 5_000_000_000
    assert (stat.probe.at_cycle_end, stat.probe.after_languages) == (False, [])
    assert [p // 5_000_000_000 for p in probe_token_positions(stat)[:3]] == [1, 2, 3]  # 9,537 steps ~ 5.0B
    assert len(probe_token_positions(stat)) == 384 and len(probe_token_positions(specs[0].cfg)) == 144


def test_cpu_estimate_from_measured_steps_adds_up(tmp_path):
    """`plan --cpu`: per-run seconds from a measured step time, and a wall time packed on the workers."""
    from plasticlm.cpu_plan import estimate_cpu
    from tests.fakes import tiny_config

    cfg = tiny_config("sweep.presets=[3K, 25K]", "sweep.seeds=[0, 1]", "probe.steps=4", "probe.eval_every=2",
                      "probe.replicates=2", "data.vocab_size=300")
    plan = plan_study(cfg)
    est = estimate_cpu(cfg, plan, parallel=2, steps=2)
    assert set(est.rates) == {"3K", "25K"} and all(r.step_s > 0 for r in est.rates.values())
    for run, r in zip(est.runs, plan.runs):
        rate = est.rates[run["preset"]]
        assert run["train_s"] == pytest.approx(r.steps * rate.step_s)
        # probes (and the scratch baseline) times probe.steps times replicates, in training steps
        assert run["probe_s"] == pytest.approx((r.probes + r.scratch_probes) * 4 * 2 * rate.step_s)
        assert run["total_s"] == pytest.approx(run["train_s"] + run["probe_s"] + run["eval_s"])
    core = sum(run["total_s"] for run in est.runs)
    assert core / 2 - 1e-9 <= est.wall_s <= core + 1e-9  # perfectly packed .. one worker
    assert est.to_json()["core_s"] == pytest.approx(core)


def test_cli_plan_cpu_json(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nseq_len = 16\n[data]\nsource = "synthetic"\nvocab_size = 300\n'
                   '[stream]\nlanguages = ["aa", "bb"]\ntokens_per_task = 128\ncycles = 1\n'
                   '[train]\nbatch_size = 4\n[probe]\nsteps = 2\neval_every = 1\nafter_languages = []\n'
                   '[sweep]\npresets = ["3K"]\n')
    assert main(["plan", str(cfg), "--cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cpu"]["wall_s"] > 0 and doc["cpu"]["rates"]["3K"]["step_s"] > 0
    assert main(["plan", str(cfg), "--cpu"]) == 0
    assert "CPU estimate on this machine" in capsys.readouterr().out
