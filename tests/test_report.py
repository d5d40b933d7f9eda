import csv
import dataclasses
import html
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from plasticlm.cli import main
from plasticlm.errors import PlasticError
from plasticlm.records import OnsetRecord
from plasticlm.report import figures as F
from plasticlm.report.build import build_report, make_report
from plasticlm.runlog import atomic_write_json, read_json
from plasticlm.scaling import Extrapolation, FormFit, ScalingFit

STUDY_SECTIONS = ["summary", "probe-scores", "onsets", "scaling", "stationary", "val-bpb", "scratch", "runs"]
STUDY_FIGURES = {"fig-probe-scores.png", "fig-onset-fit.png", "fig-stationary.png", "fig-val-bpb.png",
                 "fig-scratch.png"}


@pytest.fixture(scope="module")
def study_report(study_dir):
    return make_report(study_dir, n_boot=50)


@pytest.fixture
def no_pixels(monkeypatch):
    """For tests of a report's text and of which figures it has: every figure is saved as the same blank
    400 x 300 PNG instead of being laid out and rendered (90% of a build's time). The rendering itself is
    tested by the module's full report, the figure tests and the browser test."""
    from matplotlib.figure import Figure

    buf = io.BytesIO()
    Figure(figsize=(4, 3)).savefig(buf, format="png", dpi=100)
    blank = buf.getvalue()
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *args, **kwargs: fname.write(blank))


def page(report) -> str:
    return Path(report.index).read_text(encoding="utf-8")


def text(report) -> str:
    """The page's visible text, tags stripped and entities decoded, whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>", " ", page(report), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def section_text(report, sid: str) -> str:
    m = re.search(rf'<section id="{sid}".*?</section>', page(report), flags=re.S)
    assert m, f"no section {sid}"
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", m.group(0))))


def onsets_csv(study: Path) -> dict[str, dict]:
    with (study / "onsets.csv").open() as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def copy_study(study: Path, dest: Path) -> Path:
    shutil.copytree(study, dest, ignore=shutil.ignore_patterns("report", "checkpoints"))
    return dest


def assert_self_contained(report, root: Path) -> None:
    doc = page(report)
    srcs = re.findall(r'<img src="([^"]+)"', doc)
    assert sorted(srcs) == sorted(p.name for p in report.figures)
    for src in srcs:
        assert not src.startswith("/") and "/" not in src, src
        w, h = F.png_size(Path(report.index).parent / src)
        assert w > 300 and h > 200
    assert str(root.resolve()) not in doc and str(root) not in doc
    assert not re.search(r"https?://|file:|<script|<link|@import|url\(", doc, flags=re.I)
    assert doc.isascii()


def _onset(task_index, tokens, code, ci=(None, None), fraction_null=None) -> OnsetRecord:
    """A run's onset record with the given numbers (others empty)."""
    return OnsetRecord("r", "85K", "continual", 84960, 1, task_index, tokens, code,
                       {"left_censored": "left", "still_improving": "right"}.get(code), None, ci[0], ci[1],
                       fraction_null, None, None)


def _fit(n, b, ci, sizes=None, left_censored=0, extrapolations=(), **power) -> ScalingFit:
    """A fit record with the given power-law statistics, on n points at ``sizes`` sizes (default n)."""
    sizes = sizes or n
    params = np.repeat(np.geomspace(1e4, 1e6, sizes), n // sizes)
    law = FormFit("power", 0.01, b, np.log(0.01), n, 0.1, ci, 0.9, 1.0, 1.0, 0.1, 0.0, 1.0, **power)
    return ScalingFit(params, np.full(n, 10.0), {"power": law}, "power", list(extrapolations), None,
                      np.arange(n) < left_censored)


# --------------------------------------------------------------------------------------------


def test_study_report_has_every_section_figure_and_table(study_dir, study_report):
    r = study_report
    assert r.index == study_dir / "report" / "index.html" and r.sections == STUDY_SECTIONS and r.skipped == []
    assert {p.name for p in r.figures} == STUDY_FIGURES
    doc = page(r)
    for sid in STUDY_SECTIONS:
        assert f'<section id="{sid}"' in doc and f'href="#{sid}"' in doc
    n = read_json(study_dir / "fit.json")["n"]
    for caption in ["Onset of plasticity loss per run (onsets.csv)", f"Scaling-law fits (fit.json; n = {n} onsets)",
                    "Power-law extrapolation of the onset", "Onset and net degradation by stream",
                    "Runs and their configuration", "Study stages (study.json)"]:
        assert f"<caption>{html.escape(caption)}" in doc, caption
    assert "Figure could not be drawn" not in doc and 'class="note"' not in doc
    assert_self_contained(r, study_dir)


def test_fit_table_lists_every_form_and_marks_the_best_by_loo(study_dir, study_report):
    fit = read_json(study_dir / "fit.json")
    doc = page(study_report)
    table = re.search(r"<caption>Scaling-law fits.*?</table>", doc, flags=re.S).group(0)
    rows = re.findall(r"<tr( class=\"best\")?><td>(\w+)</td>", table)
    assert [name for _, name in rows] == ["power", "linear", "linear_log", "exponential"]
    assert [name for best, name in rows if best] == [fit["best_by_loo"]]
    for col in ["b_se", "b 95% CI (OLS)", "b 95% CI (bootstrap over sizes)", "R^2", "RMSE (task instances)",
                "LOO RMSE (task instances)"]:
        assert f"<th>{html.escape(col)}</th>" in table
    power = fit["fits"]["power"]
    assert f"{power['b']:.4g}" in table and f"[{power['b_boot95'][0]:.4g}, {power['b_boot95'][1]:.4g}]" in table


def test_summary_states_onsets_fit_and_its_limits(study_dir, study_report):
    summary = section_text(study_report, "summary")
    rows = onsets_csv(study_dir)
    assert "10 runs (10 done) at 5 sizes" in summary and "25K (25,472)" in summary
    assert "streams: continual x5, stationary x5" in summary
    for name, row in rows.items():
        label = name.split("-")[0] + " s0 (" + row["stream"] + ")"
        if row["onset_task_index"]:
            onset = int(float(row["onset_task_index"]))
            at = "at or before" if row["code"] == "left_censored" else "after"
            assert f"{label}: onset {at} {onset} task instances" in summary
            if row["seq_ci95_low"]:
                assert (f"95% CI over validation sequences [{int(float(row['seq_ci95_low']))}, "
                        f"{int(float(row['seq_ci95_high']))}] task instances") in summary
        elif row["code"] == "still_improving":
            assert f"{label}: no onset yet: the smoothed score is still falling at the last probe, so the onset " \
                   f"is at or after {int(float(row['lower_bound_task_index']))} task instances" in summary
        else:
            assert f"{label}: no onset" in summary
    designed = [rows[f"{p}-s0-continual"]["onset_task_index"] for p in ("200K", "390K", "670K")]
    assert designed == ["3", "5", "6"] and {rows[f"{p}-s0-continual"]["code"] for p in ("200K", "390K")} == {"onset"}
    assert "every bootstrap draw" not in summary  # a validation-sequence CI never makes an onset certain
    assert "evaluation noise only" in summary
    assert "One seed per size: training noise is not measured" in summary
    assert rows["670K-s0-stationary"]["onset_task_index"] == ""  # designed at 8 of 9 probes: still falling
    assert rows["670K-s0-stationary"]["code"] == "still_improving"
    assert rows["670K-s0-stationary"]["lower_bound_task_index"] == "8"
    fit = read_json(study_dir / "fit.json")
    b, n = fit["fits"]["power"]["b"], fit["n"]
    assert f"Power law T = a P^b fitted to {n} onsets at {fit['n_sizes']} sizes: b = {b:.3g}" in summary
    if n == 3:  # only the designed onsets: 3, 5, 6 give b ~ 0.58 with an OLS CI far wider than [0, 1]
        assert "these data do not show whether the onset grows with model size" in summary
        assert "Only 3 onsets: the fit has 1 residual degree of freedom, so b and its intervals rest on" in summary
    assert f"2^b = {2 ** b:.2f}" in summary
    far = 7e9 / max(float(r["non_embedding_params"]) for r in rows.values() if r["onset_task_index"]
                    and r["stream"] == "continual")
    assert "Extrapolated onsets of the power law: 1B params:" in summary and f"{far:.0f}x beyond the largest" in summary
    assert "200K s0: net degradation (smoothed dAUC above 0 after its minimum) at 1.6K tokens on the continual " \
        "stream, not reached on the stationary stream." in summary


@pytest.mark.parametrize("b, ci, says", [
    (0.45, [0.3, 0.6], "b < 1 with the whole CI below 1: the onset grows sublinearly, slower than model size; "
                       "doubling the non-embedding parameters multiplies the onset by 2^b = 1.37, not 2"),
    (0.7, [0.2, 1.3], "but the CI reaches 1, so linear growth is not excluded by these data"),
    (0.4, [-0.1, 0.9], "A 95% interval of b includes 0 (OLS): these data do not show whether the onset grows"),
    (1.2, [1.1, 1.3], "b >= 1: here the onset grows at least linearly with size"),
])
def test_fit_interpretation(b, ci, says):
    from plasticlm.report.load import ReportInput
    from plasticlm.report.prose import fit_sentences

    fit = _fit(8, b, ci, extrapolations=[Extrapolation(1e9, 120.0, (60.0, 250.0), 6e11)])
    out = " ".join(fit_sentences(ReportInput(Path("."), "study", [], fit=fit)))
    assert says in out
    assert "fitted to 8 onsets at 8 sizes" in out and "residual degree" not in out
    assert "1B params: 120 task instances (95% PI [60, 250]) = 600B tokens" in out
    assert "best form is power (the power law)" in out


def test_onset_sentence_says_when_the_interval_is_wide_or_draws_have_no_onset():
    from plasticlm.report.load import RunData
    from plasticlm.report.prose import onset_sentence

    probes = [{"task_index": k, "tokens_seen": 320 * k} for k in range(1, 10)]
    run = RunData("r", ".", Path("."), preset="85K", seed=1, stream="continual", probes=probes,
                  onset=_onset(5, 1600, "onset", ci=(2, 8), fraction_null=0.3))
    text = onset_sentence(run)
    assert text.startswith("85K s1 (continual): onset after 5 task instances (1.6K tokens); 95% CI over validation "
                           "sequences [2, 8] task instances ([640, 2.56K] tokens) (evaluation noise only")
    assert "a wide interval, the onset is poorly determined" in text
    assert text.endswith("; 30% of the bootstrap draws find no onset at all")
    run.onset = _onset(2, 640, "left_censored", ci=(2, 2))
    text = onset_sentence(run)
    assert "onset at or before 2 task instances" in text and "left-censored" in text
    assert "evaluation noise only: it does not include training noise" in text


def test_runs_bootstrap_interval_that_includes_zero_means_not_shown():
    from plasticlm.report.load import ReportInput
    from plasticlm.report.prose import fit_sentences

    fit = _fit(9, 0.5, (0.2, 0.8), sizes=3, left_censored=2, b_boot95=(0.3, 0.7), b_runs_boot95=(-0.2, 1.1))
    out = " ".join(fit_sentences(ReportInput(Path("."), "study", [], fit=fit)))
    assert "bootstrap over runs within sizes (seed spread) [-0.2, 1.1]" in out
    assert "A 95% interval of b includes 0 (bootstrap over runs)" in out
    assert "2 of these onsets are left-censored" in out


def test_size_sentence_never_calls_an_onset_certain_when_seeds_disagree():
    from plasticlm.records import SizeRecord
    from plasticlm.report.prose import size_sentence

    z = SizeRecord("25K", "continual", 25472, 3, 48, 6291456, "onset", None, None, 40, 64, (48, 64, 40), False)
    text = size_sentence(z)
    assert "onset of the seed-averaged score 48 task instances, 95% CI over runs [40, 64]" in text
    assert "seeds disagree" in text and "48, 64, 40" in text
    z1 = SizeRecord("25K", "continual", 25472, 1, 48, 6291456, "onset", None, None, None, None, (48,), True)
    assert "one seed, so training noise is not measured" in size_sentence(z1)


def test_a_large_study_summarises_onsets_per_size_and_stream():
    from plasticlm.report.load import RunData
    from plasticlm.report.prose import onset_lines

    runs = [RunData(f"{p}-s{seed}-{stream}", ".", Path("."), preset=p, seed=seed, stream=stream, params=n,
                    onset=_onset(3 + seed, None, "onset") if seed or stream == "continual"
                    else _onset(None, None, "still_improving"))
            for p, n in (("85K", 84_960), ("25K", 25_472)) for seed in range(4)
            for stream in ("continual", "stationary")]
    lines = onset_lines(runs)
    assert lines == [
        "25K (continual, 4 runs): onset after 3, 4, 5, 6 task instances.",
        "85K (continual, 4 runs): onset after 3, 4, 5, 6 task instances.",
        "25K (stationary, 4 runs): onset after 4, 5, 6 task instances; no onset in 1 of them.",
        "85K (stationary, 4 runs): onset after 4, 5, 6 task instances; no onset in 1 of them.",
        "Each run's onset, its confidence interval, or why it has none: the Onsets table.",
    ]
    assert len(onset_lines(runs[:12])) == 12  # up to 12 runs: one sentence each


def test_probe_figure_marks_the_onsets_of_onsets_csv_and_the_window3_mean(study_dir, monkeypatch, tmp_path):
    from plasticlm.report import sections
    from plasticlm.report.context import Context
    from plasticlm.report.load import load_report_input

    drawn, plot = {}, F.plot_score_panels
    monkeypatch.setattr(F, "plot_score_panels",
                        lambda panels, path, **kw: plot(drawn.setdefault(Path(path).name, panels), path, **kw))
    ctx = Context(load_report_input(study_dir), tmp_path)
    sections.probe_scores(ctx)
    panels = drawn["fig-probe-scores.png"]
    assert [p.title.split(":")[0] for p in panels] == ["25K", "85K", "200K", "390K", "670K"]
    rows = onsets_csv(study_dir)
    for p in panels:
        (s,) = p.series
        row = rows[f"{p.title.split(':')[0]}-s0-continual"]
        assert s.onset == (float(row["onset_task_index"]) if row["onset_task_index"] else None)
        y = np.asarray(s.y)
        assert np.allclose(s.smooth_y, (y[:-2] + y[1:-1] + y[2:]) / 3) and list(s.smooth_x) == list(s.x[1:-1])
        assert list(s.x) == list(range(1, 10)) and y[0] == 0.0  # dAUC against the first probe


def test_single_run_directory_report(study_dir, tmp_path):
    run = copy_study(study_dir / "runs" / "25K-s0-continual", tmp_path / "run")
    r = make_report(run, n_boot=20)
    assert r.sections == ["summary", "probe-scores", "onsets", "val-bpb", "scratch", "runs"]
    assert {p.name for p in r.figures} == {"fig-probe-scores.png", "fig-val-bpb.png", "fig-scratch.png"}
    summary = section_text(r, "summary")
    assert "Run run: preset 25K (25,472 non-embedding parameters), continual stream, 3 languages x 3 cycles" in summary
    assert "computed from each run's probes.jsonl" in text(r)
    assert_self_contained(r, run)


def test_missing_or_failed_fit_is_explained(study_dir, tmp_path, no_pixels):
    study = copy_study(study_dir, tmp_path / "s")
    (study / "report").mkdir()
    (study / "report" / "fig-onset-fit.png").write_bytes(b"stale")
    (study / "fit.json").unlink()
    r = make_report(study)
    assert "fig-onset-fit.png" not in {p.name for p in r.figures}
    assert not (study / "report" / "fig-onset-fit.png").exists()  # a figure of an earlier build is removed
    scaling = section_text(r, "scaling")
    found = [row for row in onsets_csv(study).values() if row["stream"] == "continual" and row["onset_task_index"]]
    n = len(found)  # the designed 3 plus the tiny runs' onsets, left-censored ones included
    assert n >= 3
    assert "No scaling-law fit: fit.json is absent" in scaling and f"Onsets exist for {n} runs at {n} sizes" in scaling
    assert "No scaling-law fit: fit.json is absent" in section_text(r, "summary")

    atomic_write_json(study / "fit.json", {"error": "2 size(s) with an onset; a scaling-law fit needs at least 3",
                                           "n": 2})
    doc = read_json(study / "study.json")  # and a study without its stationary runs
    doc["runs"] = [e for e in doc["runs"] if e["stream"] != "stationary"]
    atomic_write_json(study / "study.json", doc)
    for d in (study / "runs").glob("*-stationary"):
        shutil.rmtree(d)
    r = make_report(study)
    summary = section_text(r, "summary")
    assert "No scaling-law fit: the fit failed: 2 size(s) with an onset; a scaling-law fit needs at least 3" in summary
    assert "Not shown: Continual vs stationary (no stationary run in this study" in summary
    assert "fig-onset-fit.png" not in {p.name for p in r.figures} and "stationary" not in r.sections
    assert_self_contained(r, study)


def test_fit_json_older_than_the_onsets_is_flagged(study_dir, tmp_path, no_pixels):
    """The report never refits: when onsets.csv no longer gives the fit's points it says so, and shows fit.json."""
    from plasticlm.records import read_onsets, write_onsets

    study = copy_study(study_dir, tmp_path / "s")
    assert "fit.json was fitted" not in section_text(make_report(study), "scaling")
    n = read_json(study / "fit.json")["n"]
    records = read_onsets(study / "onsets.csv")
    records = [dataclasses.replace(r, onset_task_index=4) if r.name == "200K-s0-continual" else r for r in records]
    write_onsets(records, study / "onsets.csv")
    r = make_report(study)
    scaling = section_text(r, "scaling")
    assert f"fit.json was fitted to {n} onsets, but onsets.csv now gives the fit {n} onsets (or other values)" \
        in scaling and "show fit.json" in scaling
    assert f"Scaling-law fits (fit.json; n = {n} onsets)" in scaling


def test_runs_without_probes_or_onset_and_broken_files_render_with_reasons(study_dir, tmp_path):
    study = copy_study(study_dir, tmp_path / "s")
    doc = read_json(study / "study.json")
    doc["runs"][0]["name"] = 'odd <b>"name"</b> & co'  # 25K continual: any text is escaped
    doc["runs"].append({"name": "1M-s0-continual", "preset": "1M", "seed": 0, "stream": "continual",
                        "run_dir": "runs/1M-s0-continual", "non_embedding_params": 10 ** 6, "status": "pending"})
    atomic_write_json(study / "study.json", doc)
    (study / "runs" / "85K-s0-continual" / "probes.jsonl").unlink()
    (study / "runs" / "25K-s0-stationary" / "probes.jsonl").write_text('{"task_index": 1}\n')  # no auc
    (study / "onsets.csv").write_text("name,onset_task_index\n")  # not the study's header: no onset is shown
    (study / "fit.json").write_text("{not json")
    r = make_report(study, n_boot=20)
    summary = section_text(r, "summary")
    assert "85K s0 (continual): no probes yet, so no onset" in summary
    assert "1M s0 (continual): no probes yet, so no onset" in summary
    assert "input problem(s)" in summary
    problems = section_text(r, "problems")
    assert "fit.json: cannot read the scaling-law fit" in problems and "probes.jsonl has a malformed row" in problems
    assert "onsets.csv: the header is not name,preset,stream" in problems  # read, never recomputed
    assert "200K s0 (continual): onset unknown (see Input problems)" in summary
    assert "No probes yet for: 85K s0, 1M s0." in section_text(r, "probe-scores")
    runs = section_text(r, "runs")
    assert "pending (no run directory yet)" in runs
    assert 'odd &lt;b&gt;&quot;name&quot;&lt;/b&gt; &amp; co' in page(r) and "<b>" not in page(r)
    assert "25K s0 (stationary): no probes yet, so no onset" in summary
    assert_self_contained(r, study)


def test_run_without_probes_skips_probe_figures_with_a_reason(study_dir, tmp_path):
    run = copy_study(study_dir / "runs" / "85K-s0-continual", tmp_path / "run")
    (run / "probes.jsonl").unlink()
    r = make_report(run)
    assert r.sections == ["summary", "val-bpb", "runs"]
    reasons = {s["section"]: s["reason"] for s in r.skipped}
    assert set(reasons) == {"Probe score over training", "Onsets", "Against a fresh initialisation"}
    assert "Not shown: Probe score over training (no run has probes yet" in section_text(r, "summary")


def test_cli_report_json_and_errors(study_dir, tmp_path, capsys):
    run = copy_study(study_dir / "runs" / "25K-s0-stationary", tmp_path / "run")
    assert main(["report", str(run), "--json", "--bootstrap", "10"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["index"] == str(run / "report" / "index.html") and Path(doc["index"]).exists()
    assert doc["sections"][0] == "summary" and all(Path(p).exists() for p in doc["figures"])
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report" / "index.html")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run found" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(PlasticError, match="no run found"):
        build_report(tmp_path / "empty")
