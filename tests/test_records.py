"""A study's results round-trip: onsets.csv, sizes.csv and fit.json read back into the records written."""

import json

import numpy as np
import pytest

from plasticlm.errors import PlasticError
from plasticlm.onset import find_onset
from plasticlm.records import (
    ONSET_COLUMNS,
    FitFailure,
    OnsetRecord,
    SizeRecord,
    read_fit,
    read_onsets,
    read_sizes,
    write_fit,
    write_onsets,
    write_sizes,
)
from plasticlm.scaling import ScalingFit, fit_scaling

ONSETS = [
    OnsetRecord("3K-s0-continual", "3K", "continual", 3296, 0, None, None, "still_improving", "right", 88, None, None,
                1.0, None, None),
    OnsetRecord("3K-s1-continual", "3K", "continual", 3296, 1, 16, 2097152, "left_censored", "left", None, 16, 16,
                0.0, 0.125, 4194304),
    OnsetRecord("3K-s2-continual", "3K", "continual", 3296, 2, 64.5, 8388608, "onset", None, None, 56, 64.5,
                0.267, 1.0000000000000002, None),
    OnsetRecord("3K-s3-continual", "3K", "continual", 3296, 3, None, None, "too_few_points", None, None, None, None,
                None, None, None),
    OnsetRecord("25K-s0-stationary", "25K", "stationary", 25472, 0, None, None, "no_probes", None, None, None, None,
                None, None, None),
    OnsetRecord("200K-s0-continual", "200K", "continual", 200192, 0, None, None, "not_finished", None, None, None,
                None, None, None, None),
]
SIZES = [
    SizeRecord("3K", "continual", 3296, 3, 48, 6291456, "onset", None, None, 16, 64, (None, 16, 64), False),
    SizeRecord("25K", "continual", 25472, 3, 48.5, 6291456, "left_censored", "left", None, 48, 64, (64, 48.5, 48),
               True),
    SizeRecord("85K", "continual", 84960, 1, None, None, "too_few_points", None, None, None, None, (None,), None),
    SizeRecord("85K", "stationary", 84960, 2, None, None, "too_few_points", None, None, None, None, None, None),
    SizeRecord("200K", "continual", 200192, 0, None, None, "not_finished", None, None, None, None, None, None),
    SizeRecord("390K", "continual", 390000, 2, None, None, "still_improving", "right", 96, 72, 96, (None, None),
               False),
]


def test_onsets_csv_round_trips_every_code_and_statistic(tmp_path):
    path = tmp_path / "onsets.csv"
    write_onsets(ONSETS, path)
    back = read_onsets(path)
    assert back == ONSETS
    assert [type(r.onset_task_index) for r in back[1:3]] == [int, float]  # each number keeps its type
    assert path.read_text().splitlines()[0] == ",".join(ONSET_COLUMNS)
    write_onsets(back, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == path.read_bytes()


def test_sizes_csv_round_trips_seed_onsets_and_agreement(tmp_path):
    path = tmp_path / "sizes.csv"
    write_sizes(SIZES, path)
    assert read_sizes(path) == SIZES
    assert path.read_text().splitlines()[1].endswith(",;16;64,False,")  # then the method: none


def test_a_study_written_by_the_sweep_reads_back_and_rewrites_byte_for_byte(study_dir, tmp_path):
    for name, read, write in (("onsets.csv", read_onsets, write_onsets), ("sizes.csv", read_sizes, write_sizes),
                              ("fit.json", read_fit, write_fit)):
        records = read(study_dir / name)
        write(records, tmp_path / name)
        assert (tmp_path / name).read_bytes() == (study_dir / name).read_bytes(), name
        again = read(tmp_path / name)
        assert (again.to_json() == records.to_json()) if name == "fit.json" else (again == records)
    onsets = read_onsets(study_dir / "onsets.csv")
    assert {r.code for r in onsets} >= {"onset", "still_improving"}


def test_fit_json_reads_back_into_the_fit_with_its_bands():
    P = np.repeat([3296.0, 25472.0, 84960.0, 200192.0], 2)
    T = np.array([16.0, 24.0, 30.0, 40.0, 44.0, 48.0, 70.0, 64.0])
    fit = fit_scaling(P, T, extrapolate_to=[1e9, 7e9], tokens_per_task=131072, n_boot=200,
                      left_censored=[True] + [False] * 7)
    doc = json.loads(json.dumps(fit.to_json()))
    back = ScalingFit.from_json(doc)
    assert back.to_json() == doc
    assert back.best_by_loo == fit.best_by_loo and back.left_censored.tolist() == fit.left_censored.tolist()
    grid = np.geomspace(1e3, 1e6, 7)
    for name, f in fit.fits.items():
        g = back.fits[name]
        assert (g.n, g.b, g.b_se, g.b_ci95, g.r2, g.loo_rmse) == (f.n, f.b, f.b_se, f.b_ci95, f.r2, f.loo_rmse)
        assert g.intercept == pytest.approx(f.intercept, rel=1e-12, abs=1e-12)
        assert (g.s, g.u_mean, g.sxx) == pytest.approx((f.s, f.u_mean, f.sxx), rel=1e-12)
        for prediction in (True, False):
            np.testing.assert_allclose(g.interval(grid, prediction=prediction), f.interval(grid, prediction=prediction),
                                       rtol=1e-9)
    assert back.extrapolations == fit.extrapolations


def test_fit_failure_round_trips(tmp_path):
    write_fit(FitFailure("2 size(s) with an onset; a scaling-law fit needs at least 3", 2), tmp_path / "fit.json")
    assert read_fit(tmp_path / "fit.json") == FitFailure("2 size(s) with an onset; a scaling-law fit needs at least 3",
                                                         2)


@pytest.mark.parametrize("edit, says", [
    (lambda t: t.replace("still_improving,right", "still_improving,left"), "line 2: censored 'left' does not match"),
    (lambda t: t.replace("not_finished", "unfinished"), "line 7: code 'unfinished' is not one of"),
    (lambda t: t.replace(",3296,1,16,", ",3296,1,sixteen,"), "line 3: onset_task_index"),
    (lambda t: t.replace("name,preset", "name,size"), "the header is not"),
    (lambda t: t + t.splitlines()[1] + "\n", "appears twice"),
])
def test_a_damaged_onsets_csv_is_refused_naming_the_line(tmp_path, edit, says):
    path = tmp_path / "onsets.csv"
    write_onsets(ONSETS, path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(PlasticError, match=says):
        read_onsets(path)


def test_a_record_says_the_reason_the_onset_rule_gave():
    """The report rebuilds the rule's sentence from the record; it equals find_onset's own."""
    curves = {"still_improving": [5, 4, 3, 2, 1, 0], "left_censored": [0, -1, 2, 3, 4, 5],
              "too_few_points": [1, 2, 3], "onset": [3, 2, 1, 0, 1, 2, 3]}
    for code, y in curves.items():
        o = find_onset(np.arange(1, len(y) + 1), y, 3)
        assert o.code == code
        rec = OnsetRecord("r", "3K", "continual", 1, 0, o.to_json()["onset_task_index"], None, code, o.censored,
                          o.to_json()["lower_bound_task_index"], None, None, None, None, None)
        assert rec.reason(len(y), 3) == o.reason
    assert ONSETS[-1].reason(0, 3) == "the run did not finish: no onset from a partial curve"
