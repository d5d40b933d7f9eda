import csv
import html

import pytest

from plasticlm.records import ONSET_COLUMNS
from plasticlm.runlog import read_json
from plasticlm.runspec import expand
from plasticlm.sweep import run_sweep
from tests.fakes import WITH_PROBES, fake_data, patch_everywhere, tiny_config, use_fake_data

SWEEP = ("probe.steps=4", "probe.eval_every=2", "probe.sequences=4", "probe.every_tokens=320",
         "probe.bootstrap=20", "sweep.presets=[25K, 85K]", "sweep.seeds=[0]", WITH_PROBES)


def test_expand_covers_presets_seeds_and_stationary_twin():
    cfg = tiny_config(*SWEEP, "sweep.seeds=[0, 1]", "sweep.stationary=true", "sweep.stationary_probe_every_tokens=640")
    specs = expand(cfg)
    assert [s.name for s in specs] == [
        "25K-s0-continual", "25K-s0-stationary", "25K-s1-continual", "25K-s1-stationary",
        "85K-s0-continual", "85K-s0-stationary", "85K-s1-continual", "85K-s1-stationary"]
    assert specs[3].cfg.train.seed == 1 and specs[3].cfg.stream.kind == "stationary"
    assert specs[4].cfg.model.preset == "85K"
    assert {s.method for s in specs} == {None}
    assert (specs[3].tags.preset, specs[3].tags.seed, specs[3].tags.stream) == ("25K", 1, "stationary")
    # the overrides are exactly what differs between the study config and the run's
    assert specs[2].overrides == {"model.preset": "25K", "model.depth": 0, "train.seed": 1}
    assert specs[3].overrides == {**specs[2].overrides, "stream.kind": "stationary", "sweep.stationary": False,
                                  "sweep.stationary_presets": [], "sweep.stationary_probe_every_tokens": 0,
                                  "probe.every_tokens": 640, "probe.at_cycle_end": False, "probe.after_languages": []}
    from plasticlm.sweep import config_differences

    for spec in specs:
        assert config_differences(cfg, spec.cfg) == sorted(k for k, v in spec.overrides.items()
                                                           if v != _get(cfg, k))


def _get(cfg, dotted):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def test_a_method_tag_extends_the_run_name_only_when_set():
    from plasticlm.runspec import RunTags, run_name

    assert run_name(RunTags("3K", 0, "continual")) == "3K-s0-continual"
    assert run_name(RunTags("3K", 0, "continual", "cbp")) == "3K-s0-continual-cbp"


def test_the_fit_takes_the_study_streams_runs_by_one_rule():
    """records.fit_points: the study's own stream (runspec.in_scaling_fit), onsets only, left-censored per
    sweep.fit_left_censored; the report's fit runs follow the same rule."""
    from plasticlm.records import OnsetRecord, fit_points
    from plasticlm.runspec import in_scaling_fit

    def rec(name, stream, onset, code):
        return OnsetRecord(name, "3K", stream, 3296, 0, onset, None, code, {"left_censored": "left"}.get(code),
                           None, None, None, None, None, None)

    recs = [rec("a", "continual", 16, "onset"), rec("b", "continual", 8, "left_censored"),
            rec("c", "stationary", 24, "onset"), rec("d", "continual", None, "too_few_points")]
    cfg = tiny_config()
    assert [r.name for r in fit_points(recs, cfg)] == ["a", "b"]
    assert [r.name for r in fit_points(recs, tiny_config("sweep.fit_left_censored=false"))] == ["a"]
    assert in_scaling_fit("continual", cfg) and not in_scaling_fit("stationary", cfg)
    permuted = tiny_config("stream.kind=permuted", "probe.after_languages=[]")
    assert in_scaling_fit("permuted", permuted) and not in_scaling_fit("continual", permuted)


def test_sweep_writes_onsets_and_fit_and_is_resumable(tmp_path, home, monkeypatch):
    cfg = tiny_config(*SWEEP, f"sweep.out_dir={tmp_path / 'study'}")
    data = fake_data()
    summary = run_sweep(cfg, data=data, quiet=True)
    study = tmp_path / "study"
    with open(study / "onsets.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ONSET_COLUMNS
    assert [r["name"] for r in rows] == ["25K-s0-continual", "85K-s0-continual"]
    assert [int(r["non_embedding_params"]) for r in rows] == [25_472, 84_960]
    fit = read_json(study / "fit.json")
    assert "needs at least 3" in fit["error"]  # two sizes cannot give a scaling law
    info = read_json(study / "study.json")
    assert [r["status"] for r in info["runs"]] == ["done", "done"]
    assert info["stages"]["train"]["status"] == "done"
    assert summary["runs"] == 2

    # a second sweep trains nothing and probes nothing
    patch_everywhere(monkeypatch, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    patch_everywhere(monkeypatch, "run_probe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("reprobed")))
    run_sweep(cfg, data=data, quiet=True)


def test_interrupted_run_resumes_in_sweep(tmp_path, home):
    cfg = tiny_config(*SWEEP, "sweep.presets=[25K]", "train.keep_last=10", f"sweep.out_dir={tmp_path / 'study'}")
    data = fake_data()
    run_sweep(cfg, data=data, quiet=True)
    run_dir = tmp_path / "study" / "runs" / "25K-s0-continual"
    ref = (run_dir / "metrics.jsonl").read_text().count("val/aa/bpb")
    # pretend the run was killed after its third task: roll back to that checkpoint
    from plasticlm.checkpoint import checkpoints_dir
    from plasticlm.rundir import update_run_json
    from plasticlm.runlog import atomic_write_text

    atomic_write_text(checkpoints_dir(run_dir) / "latest", "task-000002\n")
    update_run_json(run_dir, status="interrupted")
    run_sweep(cfg, data=data, quiet=True)
    assert read_json(run_dir / "run.json")["status"] == "done"
    assert (run_dir / "metrics.jsonl").read_text().count("val/aa/bpb") == ref


@pytest.mark.parametrize("parallel", [1, 2], ids=["in-process", "spawned-pool"])
def test_sweep_of_two_micro_presets_on_the_synthetic_source(tmp_path, home, parallel):
    """#6 acceptance; with parallel = 2 the runs train in spawned workers that load the cached data."""
    from plasticlm.config import load_config

    cfg = load_config(None, [f"sweep.parallel={parallel}",
        "data.source=synthetic", "data.synthetic_bytes=60000", "data.vocab_size=320", "model.seq_len=32",
        "stream.languages=[en, fr, de]", "stream.tokens_per_task=2560", "stream.cycles=2", "train.batch_size=4",
        "eval.sequences=4", "probe.after_languages=[]", "probe.every_tokens=2560", "probe.steps=4",
        "probe.eval_every=2", "probe.sequences=4", "probe.bootstrap=20", "sweep.presets=[25K, 85K]",
        f"sweep.out_dir={tmp_path / 'study'}"])
    summary = run_sweep(cfg, quiet=True)
    with open(tmp_path / "study" / "onsets.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["preset"] for r in rows] == ["25K", "85K"]
    for name in ("25K-s0-continual", "85K-s0-continual"):
        probes = read_json(tmp_path / "study" / "runs" / name / "run.json")
        assert probes["status"] == "done"
    assert len(summary["onsets"]) == 2


def test_study_runs_every_stage_and_dry_run_plans(tmp_path, home, capsys):
    from plasticlm.study import dry_run, run_study

    cfg = tiny_config(*SWEEP, "sweep.presets=[25K]", f"sweep.out_dir={tmp_path / 'study'}")
    plan = dry_run(cfg)
    assert [r["status"] for r in plan["runs"]] == ["missing"] and not (tmp_path / "study").exists()
    assert [(r["name"], r["method"]) for r in plan["runs"]] == [("25K-s0-continual", None)]
    summary = run_study(cfg, data=fake_data(), quiet=True)
    assert (tmp_path / "study" / "report" / "index.html").exists() and summary["report"].endswith("index.html")
    stages = read_json(tmp_path / "study" / "study.json")["stages"]
    assert {k: v["status"] for k, v in stages.items()} == {
        "train": "done", "probe": "done", "onsets_and_fit": "done", "report": "done"}
    assert [r["status"] for r in dry_run(cfg)["runs"]] == ["done"]
    with open(tmp_path / "study" / "onsets.csv") as f:
        assert "ci_fraction_null" in f.readline()
    page = (tmp_path / "study" / "report" / "index.html").read_text()
    assert summary["report_summary"][0].startswith("1 run (1 done) at 1 size (")
    assert all(html.escape(item, quote=False) in page for item in summary["report_summary"])


def test_cli_study_ends_with_the_table_the_summary_and_the_report_path(tmp_path, home, capsys, monkeypatch):
    from plasticlm.cli import main
    from plasticlm.config import dumps_toml

    cfg = tiny_config(*SWEEP, "sweep.presets=[25K]", "sweep.parallel=1", f"sweep.out_dir={tmp_path / 'study'}")
    (tmp_path / "study.toml").write_text(dumps_toml(cfg))
    use_fake_data(monkeypatch, fake_data())
    assert main(["study", str(tmp_path / "study.toml"), "--quiet"]) == 0
    out = capsys.readouterr().out
    table, rest = out.split("Summary (the top of the report):")
    assert "25K-s0-continual" in table and "power law" not in table
    summary, report = rest.split("\nreport: ")
    assert summary.strip().startswith("- 1 run (1 done) at 1 size (") and "No scaling-law fit" in summary
    assert report.strip() == str(tmp_path / "study" / "report" / "index.html")


def test_a_run_that_fails_does_not_stop_the_sweep(tmp_path, home, capsys):
    cfg = tiny_config(*SWEEP, "optim.lr=1e30", "optim.grad_clip=0", f"sweep.out_dir={tmp_path / 'study'}")
    summary = run_sweep(cfg, data=fake_data(), quiet=True)
    info = read_json(tmp_path / "study" / "study.json")
    assert [r["status"] for r in info["runs"]] == ["failed", "failed"]  # both trained, neither stopped the other
    assert all(r["onset_task_index"] is None for r in summary["onsets"]) and "error" in summary["fit"]
    assert "failed" in capsys.readouterr().err
    run_sweep(cfg, data=fake_data(), quiet=True)  # failed runs are skipped, not repeated
    assert read_json(tmp_path / "study" / "study.json")["stages"]["onsets_and_fit"]["status"] == "done"


def test_report_of_a_study_too_small_for_a_fit_shows_onset_bounds(tmp_path, home):
    from plasticlm.report.build import make_report

    cfg = tiny_config(*SWEEP, f"sweep.out_dir={tmp_path / 'study'}")
    run_sweep(cfg, data=fake_data(), quiet=True)
    r = make_report(tmp_path / "study", n_boot=20)
    names = [p.name for p in r.figures]
    assert "fig-onset-bounds.png" in names and "fig-onset-fit.png" not in names
    assert (tmp_path / "study" / "report" / "fig-onset-bounds.png").stat().st_size > 1000


def test_study_with_three_seeds_reports_seed_based_cis_for_onsets_and_b(tmp_path, home):
    """Three sizes x three seeds, each run written by hand with its own onset (the seeds disagree by
    one probe at two sizes): sizes.csv, fit.json and the report carry the seed-based uncertainty."""
    from plasticlm.report.build import build_report
    from tests.studies import STUDY, _designed_run

    root = tmp_path / "seeds"
    cfg = tiny_config(*STUDY[:-2], "sweep.presets=[200K, 390K, 670K]", "sweep.seeds=[0, 1, 2]",
                      f"sweep.out_dir={root}")
    onsets = {"200K": [3, 3, 4], "390K": [5, 4, 5], "670K": [6, 6, 6]}
    for spec in expand(cfg):
        _designed_run(spec.run_dir(root), spec.cfg, onsets[spec.preset][spec.seed], seed=spec.seed)
    summary = run_sweep(cfg, root, data=fake_data(), quiet=True)
    with open(root / "sizes.csv") as f:
        sizes = {r["preset"]: r for r in csv.DictReader(f)}
    assert set(sizes) == {"200K", "390K", "670K"}
    for preset, want in onsets.items():
        row = sizes[preset]
        assert row["n_seeds"] == "3" and row["seed_onsets"] == ";".join(map(str, want))
        assert row["seeds_agree"] == str(len(set(want)) == 1)
        lo, hi = float(row["runs_ci95_low"]), float(row["runs_ci95_high"])
        assert min(want) <= lo <= float(row["onset_task_index"]) <= hi <= max(want)
    assert sizes["670K"]["runs_ci95_low"] == sizes["670K"]["runs_ci95_high"] == "6"
    power = summary["fit"]["fits"]["power"]
    assert summary["fit"]["n"] == 9 and power["b_runs_boot95"] is not None
    assert power["b_runs_boot95"][0] <= power["b"] <= power["b_runs_boot95"][1]
    page = build_report(root).read_text()
    assert "95% CI over runs" in page and "the seeds disagree" in page and "bootstrap over runs within sizes" in page
    assert "One seed per size" not in page


def test_study_dir_accepts_new_default_keys_and_neutral_changes_but_not_others(tmp_path):
    from plasticlm.config import dumps_toml
    from plasticlm.errors import PlasticError
    from plasticlm.sweep import init_study_dir

    cfg = tiny_config()
    d = tmp_path / "study"
    init_study_dir(cfg, d)
    # a study written by older code: a key it did not know yet is missing from its config.toml
    text = (d / "config.toml").read_text().replace("allow_reuse = false\n", "")
    (d / "config.toml").write_text(text)
    init_study_dir(cfg, d)  # same values: fine
    neutral = ("stream.allow_reuse=true", "sweep.parallel=2", "train.malloc=system")  # change no number
    init_study_dir(tiny_config(*neutral), d)
    with pytest.raises(PlasticError, match=r"optim.lr.*differ"):
        init_study_dir(tiny_config("stream.allow_reuse=true", "optim.lr=0.5"), d)
    assert (d / "config.toml").read_text() == dumps_toml(tiny_config(*neutral))


def test_sweep_no_train_analyses_the_finished_runs_only(tmp_path, home):
    from tests.studies import STUDY, _designed_run

    root = tmp_path / "partial"
    cfg = tiny_config(*STUDY[:-2], "sweep.presets=[200K, 390K, 670K]", f"sweep.out_dir={root}")
    for spec in expand(cfg):
        if spec.preset != "670K":  # the largest is still "training" elsewhere
            _designed_run(spec.run_dir(root), spec.cfg, {"200K": 3, "390K": 5}[spec.preset])
    summary = run_sweep(cfg, root, data=fake_data(), quiet=True, train=False)
    codes = {r["preset"]: r["code"] for r in summary["onsets"]}
    assert codes == {"200K": "onset", "390K": "onset", "670K": "not_finished"}
    assert not (root / "runs" / "670K-s0-continual").exists()  # nothing was trained
    assert "error" in summary["fit"] and (root / "sizes.csv").is_file()


def test_analysis_section_sets_the_fit_extrapolation_and_rejects_bad_values():
    from plasticlm.config import AnalysisConfig
    from plasticlm.errors import ConfigError
    from plasticlm.records import OnsetRecord
    from plasticlm.sweep import fit_onsets

    assert (AnalysisConfig().window, AnalysisConfig().extrapolate_to) == (3, [1e9, 7e9])  # arXiv:2606.24752
    recs = [OnsetRecord(f"{p}-s0-continual", p, "continual", n, 0, t, None, "onset", None, None, None, None, None,
                        None, None) for p, n, t in (("a", 1000, 4), ("b", 10_000, 6), ("c", 100_000, 9))]
    assert [e.params for e in fit_onsets(recs, tiny_config()).extrapolations] == [1e9, 7e9]
    assert [e.params for e in fit_onsets(recs, tiny_config("analysis.extrapolate_to=[1e8]")).extrapolations] == [1e8]
    with pytest.raises(ConfigError, match="analysis.window = 4: must be an odd positive integer"):
        tiny_config("analysis.window=4")
    with pytest.raises(ConfigError, match="unknown key 'analysis.windows'.*did you mean 'analysis.window'"):
        tiny_config("analysis.windows=3")
    with pytest.raises(ConfigError, match="analysis.extrapolate_to"):
        tiny_config("analysis.extrapolate_to=[-1.0]")
