"""`plasticlm diagnose`: diagnostics of saved checkpoints, forgetting, correlation / lead-lag, report."""

import html
import json
import re

import numpy as np
import pytest
import torch

from plasticlm import diagnostics as D
from plasticlm.cli import main
from plasticlm.diagnose import (
    DiagnoseOptions,
    diagnose_checkpoint,
    diagnose_model,
    diagnose_run_dir,
    held_out_windows,
    initial_state,
)
from plasticlm.diagnostics_analysis import analyse_run, diagnostic_columns, pool_runs, spearman
from plasticlm.forgetting import forgetting_matrix
from plasticlm.probe import probe_task_indices
from plasticlm.runlog import read_jsonl
from plasticlm.train import Trainer, train
from tests.fakes import WITH_PROBES, fake_data, tiny_config, use_fake_data

PROBE = ("probe.steps=6", "probe.eval_every=2", "probe.sequences=4", WITH_PROBES)


@pytest.fixture(autouse=True)
def _denormals_back():
    """Training and diagnose flush denormals (cpu.configure_cpu), a process-wide CPU flag; later test
    modules (hypothesis in test_diagnostics.py) need IEEE subnormals back."""
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def data():
    return fake_data(n_train=4000)  # enough for 6 tasks of 320 tokens and 6-step probes; quick to make


def _diag(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith("diag/")}


def test_diagnose_run_dir_at_every_probe_point_once_and_a_checkpoint_answers(tmp_path, home, data, capsys,
                                                                             monkeypatch):
    cfg = tiny_config(*PROBE, "probe.in_run=false", "train.keep_last=1")
    run = tmp_path / "run"
    train(cfg, run, data=data, quiet=True)
    rows = diagnose_run_dir(run, data=data, progress=False)
    points = [k + 1 for k in probe_task_indices(cfg, 6, 3, 320)]
    assert points == [3, 6]
    assert [r["task_index"] for r in rows] == points and [r["tokens_seen"] for r in rows] == [960, 1920]
    on_disk = read_jsonl(run / "diagnostics.jsonl")
    assert [r["checkpoint"] for r in on_disk] == ["task-000002", "task-000005"]
    assert diagnose_run_dir(run, data=data, progress=False) == []  # idempotent: nothing the second time
    assert len(read_jsonl(run / "diagnostics.jsonl")) == 2

    r = rows[-1]
    for i in range(2):  # the 25K preset: 2 blocks of width 32, 2 heads
        mlp = f"diag/blocks.{i}.mlp"
        assert 0 <= r[f"{mlp}/dormant"] <= 1 and r[f"{mlp}/units"] == 128
        assert r[f"{mlp}/dormant_count"] == round(r[f"{mlp}/dormant"] * 128)
        assert (r[f"{mlp}/rank_n"], r[f"{mlp}/rank_d"]) == (8 * 16, 128)
        assert (r[f"diag/blocks.{i}.resid/rank_n"], r[f"diag/blocks.{i}.resid/rank_d"]) == (128, 32)
        assert 1 <= r[f"{mlp}/effective_rank"] <= 128 and r[f"{mlp}/srank"] >= r[f"{mlp}/approximate_rank"] >= 1
        for h in range(2):
            assert 0 < r[f"diag/blocks.{i}.attn/entropy/head{h}"] <= r["diag/attn/h_max"] + 1e-9
            assert r[f"diag/blocks.{i}.attn/q_norm/head{h}"] > 0
    assert r["diag/attn/query_start"] == 16 // 8 and r["diag/attn/lazy"] + r["diag/attn/collapsed"] <= 4
    assert r["diag/params/mean_abs"] > 0 and r["diag/params/drift"] > rows[0]["diag/params/drift"] > 0
    assert r["settings"]["attn_language"] == "aa" and r["settings"]["probe_language"] == "vi"

    use_fake_data(monkeypatch, data)
    capsys.readouterr()
    assert main(["diagnose", str(run / "checkpoints" / "task-000005"), "--json", "--device", "cpu"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["task_index"] == 6 and _diag(one) == _diag(on_disk[1])  # fixed batches: the same numbers
    assert main(["diagnose", str(run), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["diagnosed"] == [] and doc["rows"] == 2 and "no probes yet" in doc["analysis"]
    assert doc["forgetting"]["languages"] == ["aa", "bb", "cc", "vi"] and doc["forgetting"]["tasks"] == list(range(7))
    assert main(["diagnose", str(run / "checkpoints")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    assert main(["diagnose", str(run), "--sequences", "0", "--checkpoint", "task-000002"]) == 0  # already done
    assert main(["diagnose", str(run / "checkpoints" / "task-000002"), "--sequences", "0"]) == 2
    assert "sequences must be >= 1" in capsys.readouterr().err


def test_cli_defaults_are_the_options_defaults():
    from plasticlm.cli import build_parser
    from plasticlm.cli.diagnose_cmd import _options

    assert _options(build_parser().parse_args(["diagnose", "x"])) == DiagnoseOptions()


def test_diagnostics_of_a_model_agree_with_direct_computations(tmp_path, data):
    cfg = tiny_config("stream.allow_reuse=true")
    t = Trainer(cfg, tmp_path / "r", data, quiet=True)
    model = t.model  # the run's fresh initialisation: drift from the rebuilt theta_0 is exactly 0
    with torch.no_grad():  # five dead MLP units in block 0: zero incoming weights, bias far below GeLU's knee
        model.blocks[0].mlp.fc.weight[:5] = 0
        model.blocks[0].mlp.fc.bias[:5] = -30
    init = initial_state(cfg.train.seed, t.gpt_config)
    o = DiagnoseOptions(batch_size=3, rank_tokens=30, query_start=5, chunk=4)  # uneven batches and chunks
    probe, attn, lang = held_out_windows(cfg, data, t.gpt_config.vocab_size, o)
    assert lang == "aa" and probe.shape == (8, 17) and attn.shape == (4, 17)
    rng = torch.get_rng_state()
    r = diagnose_model(model, probe, attn, o, init)
    assert torch.equal(torch.get_rng_state(), rng) and model.training  # no RNG drawn, mode restored
    assert all(p.grad is None for p in model.parameters())  # the gradient pass leaves .grad as it was

    drift = {k: v for k, v in r.items() if k.endswith("/drift") and k != "diag/params/drift"}
    assert len(drift) == len(list(model.parameters()))
    assert drift["diag/blocks.0.mlp.fc.weight/drift"] > 0  # the edited tensors, and only those, moved
    assert drift["diag/blocks.0.mlp.fc.bias/drift"] == pytest.approx(30 * 5 ** 0.5)
    assert all(v == 0 for k, v in drift.items() if "blocks.0.mlp.fc." not in k)
    assert r["diag/params/drift"] == pytest.approx(sum(v * v for v in drift.values()) ** 0.5)

    acts, resid, qkv = [], [], []
    hooks = [model.blocks[0].mlp.act.register_forward_hook(lambda m, a, out: acts.append(out)),
             model.blocks[1].register_forward_hook(lambda m, a, out: resid.append(out)),
             model.blocks[1].attn.qkv.register_forward_hook(lambda m, a, out: qkv.append(out))]
    model.eval()
    with torch.no_grad():
        model(torch.from_numpy(probe[:, :-1]))
        n_probe = len(qkv)
        model(torch.from_numpy(attn[:, :-1]))
    for h in hooks:
        h.remove()
    h0 = acts[0].reshape(-1, 128)
    mask = D.dormant_mask(h0, 0.01)
    assert mask[:5].all() and r["diag/blocks.0.mlp/dormant_count"] == int(mask.sum()) >= 5
    assert r["diag/blocks.0.mlp/feature_norm"] == pytest.approx(D.feature_norm(h0), rel=1e-9)
    rows = h0[::5]  # ceil(128 / 30) = 5: every 5th token, across batch boundaries (48 tokens each)
    assert r["diag/blocks.0.mlp/rank_n"] == rows.shape[0] == 26
    assert r["diag/blocks.0.mlp/effective_rank"] == pytest.approx(D.effective_rank(rows).value, rel=1e-9)
    assert r["diag/blocks.0.mlp/stable_rank"] == pytest.approx(D.stable_rank(rows).value, rel=1e-9)
    assert r["diag/blocks.1.resid/srank"] == D.srank(resid[0].reshape(-1, 32)[::5]).value

    q, k, _ = D.split_qkv(qkv[n_probe], 2)  # dense softmax on the attention windows: the reference
    scores = (q @ k.transpose(-1, -2)) / 16 ** 0.5
    probs = torch.softmax(scores.masked_fill(torch.ones(16, 16, dtype=torch.bool).triu(1), float("-inf")), -1)
    dense = D.attention_entropy(probs, query_start=5)
    for h in range(2):
        assert r[f"diag/blocks.1.attn/entropy/head{h}"] == pytest.approx(dense[h].item(), abs=1e-6)
    assert r["diag/attn/h_max"] == pytest.approx(D.max_attention_entropy(16, 5))
    assert 0 <= r["diag/blocks.0.mlp/grama"] <= 1 and r["diag/grad/norm"] > 0


# ---------------------------------------------------------------------------- forgetting


def test_forgetting_matrix_from_hand_made_metrics():
    def ev(task, lang, a, b, v):
        return {"task_index": task, "lang": lang, "step": 0, "tokens": 0, "val/a/bpb": a, "val/b/bpb": b,
                "val/v/bpb": v}

    metrics = [
        ev(-1, None, 3.0, 3.0, 3.0),
        {"task_index": 0, "lang": "a", "train/loss": 2.0},  # training rows are not evaluations
        ev(0, "a", 2.0, 3.2, 3.1),
        ev(1, "b", 2.5, 2.1, 3.2),
        ev(2, "a", 1.8, 2.4, 3.3),
        ev(3, "b", 2.6, 1.9, 3.4),
        {"task_index": 4, "lang": "a", "train/loss": 1.0},  # task 5 (a) not evaluated: eval.every_tasks > 1
        ev(5, "b", 2.2, 2.0, 3.6),
    ]
    doc = forgetting_matrix(metrics, trained=["a", "b"])
    assert doc["languages"] == ["a", "b", "v"] and doc["tasks"] == [0, 1, 2, 3, 4, 6]
    assert doc["matrix"][2] == [2.5, 2.1, 3.2]
    a, b = doc["summary"]["a"], doc["summary"]["b"]
    assert (a["best"], a["best_task_index"], a["final"]) == (1.8, 3, 2.2)
    assert a["forgetting"] == pytest.approx(0.4) and a["max_forgetting"] == pytest.approx(0.8)
    assert b["forgetting"] == pytest.approx(0.1) and b["relative"] == pytest.approx(0.1 / 1.9)
    assert doc["mean_forgetting"] == pytest.approx(0.25)
    assert doc["summary"]["v"]["trained"] is False
    # a after a task of a: 3.0->2.0 and 2.5->1.8; after b: 2.0->2.5 and 1.8->2.6 (6 follows 4 with a gap: unused)
    assert doc["change"]["a"]["a"] == pytest.approx(-0.85) and doc["change"]["a"]["b"] == pytest.approx(0.65)
    assert doc["change"]["b"]["b"] == pytest.approx(-0.8)
    with pytest.raises(ValueError, match="no validation evaluation"):
        forgetting_matrix([{"task_index": 0, "train/loss": 1.0}])


# ---------------------------------------------------------------------------- correlation and lead / lag


def _curves(onset: float, lead: float, n: int = 12):
    x = np.arange(1, n + 1, dtype=float)
    probes = [{"task_index": t, "dauc": (t - onset) ** 2} for t in x]
    diag = [{"task_index": t,
             "diag/lead": (t - onset - lead) ** 2 + 1.0,  # a U like the score, its minimum `lead` tasks away
             "diag/falls": -(t - onset + 1) ** 2,  # an inverted U: moves against the score, peaks 1 task early
             "diag/monotone": t ** 1.5,  # no interior extremum: no change point
             "diag/constant": 2.0,
             "diag/blocks.0.mlp/rank_n": 128}  # a shape, not a diagnostic
            for t in x]
    return diag, probes


def test_spearman_and_lead_lag_on_constructed_curves():
    diag, probes = _curves(onset=7, lead=-2)
    assert diagnostic_columns(diag) == ["diag/lead", "diag/falls", "diag/monotone", "diag/constant"]
    res = analyse_run(diag, probes)
    assert res["onset_task_index"] == 7 and res["onset_code"] == "onset"
    c = res["columns"]
    from scipy.stats import spearmanr

    y = [p["dauc"] for p in probes]
    assert c["diag/lead"]["spearman"] == pytest.approx(spearmanr([d["diag/lead"] for d in diag], y).statistic)
    assert c["diag/lead"]["spearman"] > 0 and (c["diag/lead"]["change_point"], c["diag/lead"]["lead"]) == (5, -2)
    assert c["diag/falls"]["spearman"] < 0 and c["diag/falls"]["lead"] == -1  # oriented: its maximum
    assert c["diag/monotone"]["code"] in ("still_improving", "left_censored")  # an end, not a change point
    assert c["diag/monotone"]["change_point"] is None and c["diag/monotone"]["lead"] is None
    assert c["diag/constant"]["spearman"] is None and c["diag/constant"]["lead"] is None
    lagging = analyse_run(*_curves(onset=6, lead=3))["columns"]["diag/lead"]
    assert lagging["lead"] == 3 and lagging["censored"] is False
    assert spearman([1, 2], [3, 4]) == (None, None)

    pooled = pool_runs([analyse_run(*_curves(7, -2)), analyse_run(*_curves(6, -2)), analyse_run(*_curves(6, -3))],
                       n_boot=200)
    p = pooled["diag/lead"]
    assert p["runs"] == 3 and p["lead"] == pytest.approx(-7 / 3) and (p["before"], p["same"], p["after"]) == (3, 0, 0)
    assert -3 <= p["lead_ci95"][0] <= p["lead_ci95"][1] <= -2
    assert pooled["diag/monotone"]["n_lead"] == 0 and pooled["diag/monotone"]["lead_ci95"] is None
    single = pool_runs([analyse_run(*_curves(7, -2))])
    assert single["diag/lead"]["lead"] == -2 and single["diag/lead"]["lead_ci95"] is None


# ---------------------------------------------------------------------------- report


def _diag_rows(probes: list[dict], dormant_min_at: float) -> list[dict]:
    rows = []
    for p in probes:
        t = p["task_index"]
        row = {"checkpoint": p["checkpoint"], "task_index": t, "tokens_seen": p["tokens_seen"],
               "diag/blocks.0.mlp/dormant": 0.01 * (t - dormant_min_at) ** 2,
               "diag/blocks.1.mlp/dormant": 0.02 * t,
               "diag/mlp/dormant": 0.01 * t, "diag/params/mean_abs": 0.02 + 0.001 * t,
               "diag/attn/h_max": 2.0, "diag/blocks.0.attn/entropy/head0": 2.0 - 0.1 * t,
               "diag/blocks.0.attn/entropy/head1": 1.0, "diag/blocks.0.attn.qkv.weight/norm": 1.0 + t}
        for i in range(2):
            row[f"diag/blocks.{i}.mlp/effective_rank"] = 100.0 - 5 * t
            row[f"diag/blocks.{i}.mlp/rank_d"] = 128
        rows.append(row)
    return rows


def test_report_shows_the_diagnostics_section_and_table(tmp_path):
    from plasticlm.report.build import make_report
    from plasticlm.runlog import atomic_write_text
    from tests.studies import STUDY, _designed_run

    study = tmp_path / "study"
    for name, onset in (("200K-s0", 5.0), ("390K-s0", 6.0)):
        run = study / "runs" / name
        _designed_run(run, tiny_config(*STUDY, f"model.preset={name[:4]}"), onset)
        rows = _diag_rows(read_jsonl(run / "probes.jsonl"), dormant_min_at=onset - 2)
        atomic_write_text(run / "diagnostics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    r = make_report(study, n_boot=20)
    assert "diagnostics" in r.sections
    assert {"fig-diag-dormancy.png", "fig-diag-erank.png", "fig-diag-entropy.png",
            "fig-diag-params.png"} <= {p.name for p in r.figures}
    page = r.index.read_text(encoding="utf-8")
    section = re.search(r'<section id="diagnostics".*?</section>', page, flags=re.S).group(0)
    assert "<caption>Diagnostics against the probe score (2 run(s) with diagnostics and probes, 2 with an onset)" \
        in section
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", section)]
    row = cells[cells.index("blocks.0.mlp/dormant"):][:8]
    assert row[1] == "2" and row[4] == "-2" and row[5] == "[-2, -2]" and row[6] == "2 / 0 / 0"
    assert "blocks.0.attn.qkv.weight/norm" not in cells and "blocks.0.attn/entropy/head0" not in cells
    assert "Forgetting: final validation bits per byte" in section
    from plasticlm.report.context import Context
    from plasticlm.report.diagnostics_section import diagnostics
    from plasticlm.report.load import load_report_input

    (study / "runs" / "200K-s0" / "diagnostics.jsonl").unlink()
    (study / "runs" / "390K-s0" / "diagnostics.jsonl").unlink()
    assert diagnostics(Context(load_report_input(study, n_boot=0), tmp_path)) is None  # only with diagnostics


def test_the_diagnostics_component_writes_the_post_hoc_rows_at_every_probe_point(tmp_path, home, data):
    """In training (train.components lists `diagnostics`): one row per probe point, with the numbers
    `plasticlm diagnose` computes from that point's checkpoint, and the training itself unchanged."""
    on = tiny_config(*PROBE, "train.keep_last=10",
                     "train.components=[task_reset, train_metrics, evaluate, probe, diagnostics, progress]")
    train(on, tmp_path / "on", data=data, quiet=True)
    rows = read_jsonl(tmp_path / "on" / "diagnostics.jsonl")
    assert [r["task_index"] for r in rows] == [3, 6] and [r["checkpoint"] for r in rows] == ["task-000002",
                                                                                          "task-000005"]
    for r in rows:
        post = diagnose_checkpoint(tmp_path / "on" / "checkpoints" / r["checkpoint"], data=data)
        assert _diag(post) == pytest.approx(_diag(r), rel=1e-6, abs=1e-9)
        assert post["tokens_seen"] == r["tokens_seen"]
    assert diagnose_run_dir(tmp_path / "on", data=data, progress=False) == []  # nothing left to diagnose
    train(tiny_config(*PROBE, "train.keep_last=10"), tmp_path / "off", data=data, quiet=True)
    a, b = (Trainer(on, tmp_path / d, data, quiet=True) for d in ("on", "off"))
    for t, d in ((a, "on"), (b, "off")):
        t.restore(tmp_path / d / "checkpoints" / "task-000005")
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_the_diagnostics_component_also_runs_every_n_steps(tmp_path, home, data):
    cfg = tiny_config(*PROBE, "train.components=[task_reset, train_metrics, evaluate, diagnostics]",
                      "components.diagnostics.every_steps=10", "components.diagnostics.grads=false")
    train(cfg, tmp_path / "run", data=data, quiet=True)
    rows = read_jsonl(tmp_path / "run" / "diagnostics.jsonl")
    assert [r["step"] for r in rows if r["checkpoint"].startswith("step-")] == [10, 20, 30]
    assert [r["task_index"] for r in rows if r["checkpoint"].startswith("task-")] == [3, 6]
    assert all("diag/grad/norm" not in r and "diag/mlp/dormant" in r for r in rows)
