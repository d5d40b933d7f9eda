"""`plasticlm compare` and the method axis of a study (runspec.expand, records, compare.csv)."""

import json

import pytest

import plasticlm.plan
from plasticlm.cli import main
from plasticlm.compare import CompareRecord, check_comparison, read_compare, welch_p, write_compare
from plasticlm.config import dumps_toml
from plasticlm.errors import ConfigError
from plasticlm.model import build_gpt_config
from plasticlm.plan import plan_study
from plasticlm.records import OnsetRecord, fit_points, read_onsets, write_onsets
from plasticlm.runspec import expand, in_scaling_fit
from tests.fakes import WITH_PROBES, fake_data, patch_everywhere, tiny_config, use_fake_data

METHODS = ("sweep.methods=[baseline, cbp, l2_init]", "mitigations.cbp.replacement_rate=0.05",
           "mitigations.cbp.maturity=2", "mitigations.l2_init.strength=0.1")
STUDY = ("model.preset=3K", "probe.steps=4", "probe.eval_every=2", "probe.sequences=4", "probe.every_tokens=320",
         "probe.bootstrap=20", "probe.scratch_baseline=false", "sweep.presets=[3K]", "sweep.seeds=[0, 1]",
         WITH_PROBES, *METHODS)


def test_the_method_axis_gives_each_run_its_own_table_and_the_twin_to_the_baseline_only():
    cfg = tiny_config(*STUDY, "sweep.stationary=true")
    specs = expand(cfg)
    assert [s.name for s in specs] == [
        "3K-s0-continual-baseline", "3K-s0-stationary-baseline", "3K-s0-continual-cbp", "3K-s0-continual-l2_init",
        "3K-s1-continual-baseline", "3K-s1-stationary-baseline", "3K-s1-continual-cbp", "3K-s1-continual-l2_init"]
    assert [s.cfg.mitigations for s in specs[:4]] == [{}, {}, {"cbp": {"replacement_rate": 0.05, "maturity": 2}},
                                                     {"l2_init": {"strength": 0.1}}]
    assert all(s.cfg.sweep.methods == [] for s in specs)
    assert specs[2].overrides["mitigations"] == {"cbp": {"replacement_rate": 0.05, "maturity": 2}}
    # without an axis nothing changes: no method tag, names as before
    plain = expand(tiny_config(*STUDY[:-4]))
    assert [s.name for s in plain] == ["3K-s0-continual", "3K-s1-continual"] and plain[0].method is None
    # the scaling fit takes the baseline (or the runs without a method) only
    assert in_scaling_fit("continual", cfg, "baseline") and in_scaling_fit("continual", cfg)
    assert not in_scaling_fit("continual", cfg, "cbp")
    recs = [OnsetRecord(n, "3K", "continual", 3296, 0, 16, None, "onset", None, None, None, None, None, None, None, m)
            for n, m in (("a", "baseline"), ("b", "cbp"), ("c", None))]
    assert [r.name for r in fit_points(recs, cfg)] == ["a", "c"]


def test_onsets_csv_keeps_the_method_and_reads_files_written_before_it(tmp_path):
    recs = [OnsetRecord("a", "3K", "continual", 3296, 0, 16, 1024, "onset", None, None, 8, 24, 0.0, None, 2048,
                        "cbp"),
            OnsetRecord("b", "3K", "continual", 3296, 1, None, None, "too_few_points", None, None, None, None, None,
                        None, None)]
    write_onsets(recs, tmp_path / "onsets.csv")
    assert read_onsets(tmp_path / "onsets.csv") == recs
    lines = (tmp_path / "onsets.csv").read_text().splitlines()
    col = lines[0].split(",").index("method")
    old = [",".join(c for i, c in enumerate(line.split(",")) if i != col) for line in lines]
    (tmp_path / "old.csv").write_text("\n".join(old) + "\n")
    assert read_onsets(tmp_path / "old.csv") == [recs[0].__class__(**{**recs[0].__dict__, "method": None}), recs[1]]


def test_compare_csv_round_trips(tmp_path):
    recs = [CompareRecord("3K", "baseline", 2, 16, "onset", 8, 24, 16.0, (16, 16), 12.5, 80.25,
                          (("aa", 3.1), ("bb", None)), 0.125, 1920, 768, 0.0, 0.0, 10.5, 0.0, None, None),
            CompareRecord("3K", "cbp", 2, None, "still_improving", None, None, None, (None, 24), -1.0, -3.5,
                          (("aa", 3.0), ("bb", 2.5)), None, 1920, 768, 1234.5, 0.015, 11.0, 0.0476, 0.5, 0.031)]
    write_compare(recs, tmp_path / "compare.csv")
    assert read_compare(tmp_path / "compare.csv") == recs


def test_welch_p_needs_two_runs_a_side_and_some_variance():
    assert welch_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert welch_p([1.0, 1.1, 0.9], [5.0, 5.2, 4.9]) < 0.001
    assert welch_p([1.0, None], [2.0, 3.0]) is None  # one onset on a side
    assert welch_p([4.0, 4.0], [4.0, 4.0]) == 1.0 and welch_p([4.0, 4.0], [8.0, 8.0]) is None


def test_compare_needs_a_method_axis_with_the_baseline(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(dumps_toml(tiny_config(*STUDY[:-4])))
    with pytest.raises(ConfigError, match="sweep.methods is empty"):
        check_comparison(tiny_config(*STUDY[:-4]))
    assert main(["compare", str(path)]) == 2
    assert main(["compare", str(path), "--set", "sweep.methods=[cbp]", "--set", "mitigations.cbp={}"]) == 2


@pytest.mark.slow
def test_compare_prints_the_table_with_cis_and_p_values_and_trains_nothing_the_second_time(
        tmp_path, home, monkeypatch, capsys):
    cfg = tiny_config(*STUDY, f"sweep.out_dir={tmp_path / 'study'}")
    (tmp_path / "compare.toml").write_text(dumps_toml(cfg))
    use_fake_data(monkeypatch, fake_data())
    assert main(["compare", str(tmp_path / "compare.toml"), "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if "onset [95% CI]" in line)
    assert "p onset" in header and "p area" in header and "final bpb" in header
    rows = {line.split()[1]: line for line in lines if line.strip().startswith("3K ")}
    assert list(rows) == ["baseline", "cbp", "l2_init"]
    assert all("[" in rows[m] for m in rows)  # a CI over the two seeds
    assert "aa:" in rows["cbp"] and "matched compute: every method" in out

    # the second call trains nothing and probes nothing, and its JSON is the table of compare.csv
    patch_everywhere(monkeypatch, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    patch_everywhere(monkeypatch, "run_probe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("reprobed")))
    assert main(["compare", str(tmp_path / "compare.toml"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    table = read_compare(tmp_path / "study" / "compare.csv")
    assert [r["method"] for r in doc["rows"]] == [r.method for r in table] == ["baseline", "cbp", "l2_init"]
    base, cbp, l2 = table
    assert base.n_seeds == cbp.n_seeds == l2.n_seeds == 2
    assert base.tokens == cbp.tokens == l2.tokens == 1920 and base.probe_tokens == cbp.probe_tokens > 0
    assert base.extra_flops_per_step == 0.0 and cbp.extra_flops_per_step > 0 and l2.extra_flops_per_step > 0
    # the plan counts each method's extra FLOPs as the runs recorded them (steps x per step), at the
    # vocabulary the runs had (the fake data's, not data.vocab_size)
    vocab = fake_data().vocab_size
    monkeypatch.setattr(plasticlm.plan, "build_gpt_config", lambda model, _: build_gpt_config(model, vocab))
    plan = {(r.method, r.seed): r for r in plan_study(cfg).runs}
    for rec in table:
        run = plan[(rec.method, 0)]
        assert run.method_flops == pytest.approx(rec.extra_flops_per_step * run.steps, rel=1e-9)
        assert run.total_flops == pytest.approx(run.train_flops + run.probe_flops + run.eval_flops + run.method_flops)
    assert base.p_auc_dauc is None and 0.0 <= cbp.p_auc_dauc <= 1.0 and 0.0 <= l2.p_auc_dauc <= 1.0
    assert all(r.onset_ci95_low is not None for r in table if r.onset_task_index is not None)
    assert [lang for lang, _ in cbp.final_bpb] == ["aa", "bb", "cc"] and all(v > 0 for _, v in cbp.final_bpb)
    assert doc["matched_compute"]["3K"]["matched"]
    # the report's comparison section: the curves per method and the table of compare.csv
    assert main(["report", str(tmp_path / "study")]) == 0
    page = (tmp_path / "study" / "report" / "index.html").read_text()
    assert "Mitigations compared" in page and "fig-compare-scores.png" in page and "p (area)" in page
    assert page.count("<th>method</th>") == 3  # the comparison, and the per-run onsets and runs tables
    assert (tmp_path / "study" / "report" / "fig-compare-scores.png").stat().st_size > 0
