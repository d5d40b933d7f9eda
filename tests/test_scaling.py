import json
import math

import numpy as np
import pytest

from plasticlm.cli import main
from plasticlm.errors import PlasticError
from plasticlm.report.figures import clipped_y_limits, plot_onset_fit
from plasticlm.scaling import FORMS, bootstrap_exponent, extrapolate, fit_form, fit_scaling

# Four points with u = ln P = 0, 1, 2, 3 and v = ln T = 0, 1, 1, 2. By hand (ubar 1.5, Sxx 5, Sxy 3):
# b = 0.6, c = 0.1, residuals -0.1, 0.3, -0.3, 0.1, SSR 0.2, s^2 = 0.1, b_se = sqrt(0.1 / 5) = sqrt(0.02),
# t(0.975, 2) = 4.302653. In T units, predictions e^0.1, e^0.7, e^1.3, e^1.9 give SS_res 1.906289,
# SS_tot 22.589321 -> r2 0.915610, rmse sqrt(1.906289 / 4) = 0.690342. Leave-one-out refits (e.g. without
# u = 0: b = 0.5, c = 1/3, error 1 - e^(1/3) = -0.395612; without u = 3: error e^2 - e^(1/6 + 1.5) = 2.094566;
# without u = 1: 0.947487; without u = 2: -1.454451) give loo_rmse 1.374485.
P4 = np.exp([0.0, 1.0, 2.0, 3.0])
T4 = np.exp([0.0, 1.0, 1.0, 2.0])


def test_power_law_four_points_by_hand():
    f = fit_form(P4, T4, "power")
    assert f.b == pytest.approx(0.6)
    assert f.a == pytest.approx(math.exp(0.1))
    assert f.b_se == pytest.approx(math.sqrt(0.02))
    assert f.b_ci95 == pytest.approx((0.6 - 4.302653 * math.sqrt(0.02), 0.6 + 4.302653 * math.sqrt(0.02)), abs=1e-6)
    assert f.r2 == pytest.approx(0.915610, abs=1e-5)  # hand values carry 6 digits
    assert f.rmse == pytest.approx(0.690342, abs=1e-5)
    assert f.loo_rmse == pytest.approx(1.374485, abs=1e-5)


def _independent(P, T, form):
    """The statistics re-derived with np.polyfit, for comparison."""
    u = np.log(P) if form in ("power", "linear_log") else P
    logt = form in ("power", "exponential")

    def fit_predict(mask, at):
        b, c = np.polyfit(u[mask], np.log(T[mask]) if logt else T[mask], 1)
        v = c + b * (np.log(at) if form in ("power", "linear_log") else at)
        return (np.exp(v) if logt else v), b, c

    pred, b, c = fit_predict(np.ones(P.size, bool), P)
    loo = np.array([T[i] - fit_predict(np.arange(P.size) != i, P[i])[0] for i in range(P.size)])
    r2 = 1 - np.sum((T - pred) ** 2) / np.sum((T - T.mean()) ** 2)
    return dict(b=b, a=np.exp(c) if logt else c, r2=r2, rmse=np.sqrt(np.mean((T - pred) ** 2)),
                loo_rmse=np.sqrt(np.mean(loo**2)))


@pytest.mark.parametrize("form", FORMS)
def test_every_form_matches_an_independent_computation(form):
    P = np.array([5e6, 1.2e7, 2.8e7, 8.3e7, 3.1e8])
    T = np.array([7.0, 9.0, 15.0, 21.0, 40.0])
    f = fit_form(P, T, form)
    ref = _independent(P, T, form)
    for key, value in ref.items():
        assert getattr(f, key) == pytest.approx(value, rel=1e-7), key
    assert f.to_json()["law"]


def test_recovers_a_known_power_law_exponent():
    rng = np.random.default_rng(0)
    sizes = np.geomspace(5e6, 3e8, 8)
    P = np.repeat(sizes, 3)  # three seeds per size
    T = 0.01 * P**0.55 * np.exp(0.08 * rng.standard_normal(P.size))
    fit = fit_scaling(P, T, n_boot=500, seed=1)
    power = fit.fits["power"]
    assert power.b_ci95[0] < 0.55 < power.b_ci95[1]
    assert power.b_boot95[0] < 0.55 < power.b_boot95[1]
    assert power.b == pytest.approx(0.55, abs=0.05)
    assert fit.best_by_loo == "power" and power.r2 > 0.9


def test_seeds_duplicated_leave_point_estimates_and_loo_unchanged():
    P = np.array([5e6, 1.2e7, 2.8e7, 8.3e7, 3.1e8])
    T = np.array([7.0, 9.0, 15.0, 21.0, 40.0])
    one = fit_form(P, T, "power")
    two = fit_form(np.repeat(P, 2), np.repeat(T, 2), "power")
    for key in ("a", "b", "r2", "rmse", "loo_rmse"):  # leave-one-SIZE-out: a twin seed cannot leak
        assert getattr(two, key) == pytest.approx(getattr(one, key)), key
    assert two.b_se < one.b_se  # more points, same residuals: smaller standard error


def test_bootstrap_is_deterministic_and_resamples_sizes():
    a = bootstrap_exponent(P4, T4, 1000, seed=5)
    b = bootstrap_exponent(P4, T4, 1000, seed=5)
    np.testing.assert_array_equal(a[2], b[2])
    assert a[0][0] < 0.6 < a[0][1]
    assert 900 < a[1] < 1000  # draws of a single size (4 in 256) have no slope and are skipped


def test_prediction_interval_formula():
    f = fit_form(P4, T4, "power")
    (e,) = extrapolate(f, [math.exp(5.0)], tokens_per_task=10.0)
    half = 4.302653 * math.sqrt(0.1) * math.sqrt(1 + 1 / 4 + (5 - 1.5) ** 2 / 5)
    centre = 0.1 + 0.6 * 5
    assert e.onset == pytest.approx(math.exp(centre))
    assert e.pi95 == pytest.approx((math.exp(centre - half), math.exp(centre + half)), rel=1e-6)
    assert e.tokens == pytest.approx(10 * e.onset)
    lo, hi = f.interval(math.exp(5.0), prediction=False)
    band = 4.302653 * math.sqrt(0.1) * math.sqrt(1 / 4 + (5 - 1.5) ** 2 / 5)
    assert (lo, hi) == pytest.approx((math.exp(centre - band), math.exp(centre + band)), rel=1e-6)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("P, T, message", [
    ([1e6, 2e6], [3.0, 4.0], "at least 3"),
    ([1e6, 1e6, 1e6], [3.0, 4.0, 5.0], "all params are equal"),
    ([1e6, 1e6, 2e6, 2e6], [3.0, 4.0, 5.0, 6.0], "only 2 distinct sizes"),
    ([1e6, 2e6, float("nan")], [3.0, 4.0, 5.0], "finite"),
])
def test_degenerate_input_is_a_clear_error(form, P, T, message):
    with pytest.raises(PlasticError, match=message):
        fit_form(P, T, form)


@pytest.mark.parametrize("form, P, T, ok", [
    ("power", [0.0, 1e6, 2e6], [3.0, 4.0, 5.0], False),
    ("power", [1e6, 2e6, 4e6], [0.0, 4.0, 5.0], False),
    ("linear_log", [-1.0, 1e6, 2e6], [3.0, 4.0, 5.0], False),
    ("linear_log", [1e6, 2e6, 4e6], [0.0, 4.0, 5.0], True),
    ("exponential", [1e6, 2e6, 4e6], [-1.0, 4.0, 5.0], False),
    ("linear", [0.0, 1e6, 2e6], [0.0, 4.0, 5.0], True),
])
def test_logs_need_positive_values(form, P, T, ok):
    if ok:
        fit_form(P, T, form)
    else:
        with pytest.raises(PlasticError, match="must be > 0"):
            fit_form(P, T, form)


def test_unknown_form_and_extrapolation_without_power():
    with pytest.raises(PlasticError, match="unknown form 'cubic'"):
        fit_scaling(P4, T4, ["cubic"])
    with pytest.raises(PlasticError, match="power law"):
        fit_scaling(P4, T4, ["linear"], extrapolate_to=[1e9])


def test_plot_writes_the_file_atomically(tmp_path):
    fit = fit_scaling(P4, T4, n_boot=0, extrapolate_to=[100.0])
    out = plot_onset_fit(fit, tmp_path / "fig" / "onset.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["onset.png"]


# ------------------------------------------------------------------ CLI


def _csv(tmp_path, text):
    p = tmp_path / "onsets.csv"
    p.write_text(text)
    return p


def test_cli_fit_json(tmp_path, capsys):
    p = _csv(tmp_path, "preset,params,seed,onset\n5M,4933120,0,6\n12M,12073600,0,10\n27M,27925632,0,14\n"
                       "27M,27925632,1,13\n106M,106109696,0,30\n314M,314859520,0,\n")
    fig = tmp_path / "fit.png"
    rc = main(["fit", "--onsets", str(p), "--extrapolate", "1e9,7e9", "--tokens-per-task", "5e9",
               "--bootstrap", "200", "--figure", str(fig), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 5 and doc["skipped_lines"] == [7]
    assert set(doc["fits"]) == set(FORMS)
    assert {"a", "b", "b_se", "b_ci95", "b_boot95", "r2", "rmse", "loo_rmse"} <= set(doc["fits"]["power"])
    assert {"a", "b", "r2", "rmse", "loo_rmse"} <= set(doc["fits"]["linear"])
    assert doc["best_by_loo"] in FORMS
    e = doc["extrapolations"][0]
    assert e["params"] == 1e9 and e["pi95"][0] < e["onset"] < e["pi95"][1]
    assert e["tokens"] == pytest.approx(e["onset"] * 5e9)
    assert fig.is_file()
    assert main(["fit", "--onsets", str(p), "--forms", "power", "--bootstrap", "0"]) == 0
    assert "best by leave-one-out RMSE: power" in capsys.readouterr().out


def test_cli_fit_without_tokens_per_task_has_null_tokens(tmp_path, capsys):
    p = _csv(tmp_path, "params,onset\n1e6,3\n2e6,4\n4e6,6\n")
    assert main(["fit", "--onsets", str(p), "--extrapolate", "1e7", "--bootstrap", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["extrapolations"][0]["tokens"] is None


@pytest.mark.parametrize("text, problem", [
    ("size,onset\n1,2\n", "missing column(s) params"),
    ("params,onset\n1e6,2\n2e6,x\n4e6,3\n", "line 3: column 'onset' = 'x' is not a number"),
    ("params,onset\n1e6,2\n1e6,3\n1e6,4\n", "all params are equal"),
    ("params,onset\n1e6,2\n2e6,3\n", "at least 3"),
])
def test_cli_fit_bad_csv_exits_2_naming_the_file(tmp_path, capsys, text, problem):
    p = _csv(tmp_path, text)
    assert main(["fit", "--onsets", str(p), "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and problem in err


def test_counts_with_suffixes_read_as_numbers(tmp_path, capsys):
    """Onset tables in papers write sizes as 27M; the CSV and the flags take them as they are."""
    from plasticlm.units import parse_count, si

    assert [parse_count(x) for x in ("27M", "1.8t", "5e9", "5B", "3g", "1_000", " 12k ")] == \
        [27e6, 1.8e12, 5e9, 5e9, 3e9, 1000.0, 12e3]
    assert (si(1.8e12), si(3.08e24), si(9.5e-9)) == ("1.8T", "3.08e+24", "9.5e-09")  # no '3.08e+12T'
    for x in (1234.0, 5.2e6, 3.14e9, 3.08e24):
        assert parse_count(si(x)) == pytest.approx(x, rel=5e-3)
    with pytest.raises(ValueError):
        parse_count("27 million")
    plain = _csv(tmp_path, "params,onset\n5000000,6\n12000000,10\n27000000,14\n")
    (tmp_path / "sfx").mkdir()
    suffixed = _csv(tmp_path / "sfx", "\ufeffparams,onset\n5M,6\n12M,10\n27M,14\n")  # with a spreadsheet's BOM
    docs = []
    for p, extra in ((plain, ["1000000000", "5000000000"]), (suffixed, ["1B", "5B"])):
        assert main(["fit", "--onsets", str(p), "--extrapolate", extra[0], "--tokens-per-task", extra[1],
                     "--bootstrap", "50", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        doc.pop("source")
        docs.append(doc)
    assert docs[0] == docs[1]
    with pytest.raises(SystemExit) as exit_:  # an argparse error
        main(["fit", "--onsets", str(plain), "--tokens-per-task", "lots"])
    assert exit_.value.code == 2
    assert "'lots' is not a count" in capsys.readouterr().err


def test_figure_y_axis_is_clipped_only_when_intervals_run_away():
    centre = np.array([20.0, 30.0, 80.0])
    assert clipped_y_limits(centre, np.array([10.0, 200.0])) is None  # within 100x: nothing to clip
    assert clipped_y_limits(centre, np.array([1e-14, 5.0, 2e19])) == (0.2, 8000.0)
    assert clipped_y_limits(centre, np.array([0.5, 2e19])) == (0.5, 8000.0)  # each side on its own
    assert clipped_y_limits(centre, np.array([0.0, 50.0, np.inf])) == (0.2, 8000.0)  # log axis: >0, finite
    assert clipped_y_limits(np.array([np.nan]), np.array([1.0])) is None


def test_runs_bootstrap_carries_the_seed_spread():
    from plasticlm.scaling import bootstrap_exponent_runs

    P = np.repeat([1e4, 1e5, 1e6], 3)
    rng = np.random.default_rng(0)
    tight = 10 * (P / 1e4) ** 0.5 * np.exp(0.01 * rng.standard_normal(9))
    noisy = 10 * (P / 1e4) ** 0.5 * np.exp(0.8 * rng.standard_normal(9))
    lo_t, hi_t = bootstrap_exponent_runs(P, tight, 1000, seed=3)
    lo_n, hi_n = bootstrap_exponent_runs(P, noisy, 1000, seed=3)
    assert lo_t < 0.5 < hi_t and hi_t - lo_t < 0.05
    assert hi_n - lo_n > 5 * (hi_t - lo_t)  # more spread between seeds, a wider interval
    assert bootstrap_exponent_runs(P4, T4, 100) is None  # one run per size: nothing to resample
    assert bootstrap_exponent_runs(P, tight, 500, seed=9) == bootstrap_exponent_runs(P, tight, 500, seed=9)
    doc = fit_scaling(P, noisy, n_boot=300).to_json()
    assert doc["fits"]["power"]["b_runs_boot95"] is not None


def test_cli_fit_marks_left_censored_onsets_and_can_leave_them_out(tmp_path, capsys):
    p = _csv(tmp_path, "params,onset,censored\n5M,6,left\n12M,6,left\n27M,14,\n53M,18,\n106M,30,\n")
    assert main(["fit", "--onsets", str(p), "--forms", "power", "--bootstrap", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 5 and doc["n_left_censored"] == 2 and doc["excluded_left_censored"] == 0
    assert [q["left_censored"] for q in doc["points"]] == [True, True, False, False, False]
    assert main(["fit", "--onsets", str(p), "--forms", "power", "--bootstrap", "0", "--json",
                 "--exclude-left-censored"]) == 0
    doc2 = json.loads(capsys.readouterr().out)
    assert doc2["n"] == 3 and doc2["n_left_censored"] == 0 and doc2["excluded_left_censored"] == 2
    assert doc2["fits"]["power"]["b"] != doc["fits"]["power"]["b"]
    assert main(["fit", "--onsets", str(p), "--forms", "power", "--bootstrap", "0"]) == 0
    assert "2 of them left-censored" in capsys.readouterr().out
