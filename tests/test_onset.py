import json

import numpy as np
import pytest

from plasticlm.cli import main
from plasticlm.errors import PlasticError
from plasticlm.onset import (
    auc,
    bootstrap_onset,
    dauc,
    find_onset,
    moving_average,
    onset_ci_from_curves,
    score_curve,
)

# ------------------------------------------------------------------ scores


def test_auc_is_trapezoid_over_probe_length():
    # areas 1*(3+1)/2 + 2*(1+2)/2 = 5 over 3 steps
    assert auc([0, 1, 3], [3.0, 1.0, 2.0]) == pytest.approx(5 / 3)
    per_seq = auc([0, 1, 3], np.array([[3.0, 1.0], [1.0, 1.0], [2.0, 1.0]]))
    assert per_seq == pytest.approx([5 / 3, 1.0])
    assert dauc(2.2, 2.0) == pytest.approx(10.0)
    with pytest.raises(PlasticError, match="strictly increasing"):
        auc([0, 2, 1], [1, 1, 1])
    with pytest.raises(PlasticError, match="reference AUC"):
        dauc(1.0, 0.0)


def test_score_curve_first_probe_and_scratch_reference():
    steps = [0, 10, 20]
    c0 = np.array([[4.0, 6.0], [3.0, 3.0], [2.0, 2.0]])  # mean curve 5,3,2 -> AUC (8/2*10 + 5/2*10)/20 = 3.25
    c1 = c0 * 1.1
    assert score_curve([c0, c1], steps) == pytest.approx([0.0, 10.0])
    scratch = c0 * 2.0
    assert score_curve([c0, c1], steps, reference=scratch) == pytest.approx([-50.0, -45.0])


# ------------------------------------------------------------------ onset on hand-made curves


def test_v_shape_onset_and_net_degradation():
    # smoothed at x=2..7: -2, -4, -13/3, -3, 0, 3 -> minimum at x=4; first smoothed > 0 after it: x=7
    # (x=6 is exactly 0, not > 0)
    r = find_onset(range(1, 9), [0, -2, -4, -6, -3, 0, 3, 6])
    assert r.onset_task_index == 4
    assert r.smoothed == pytest.approx([-2, -4, -13 / 3, -3, 0, 3])
    assert list(r.smoothed_task_index) == [2, 3, 4, 5, 6, 7]
    assert r.net_degradation_task_index == 7 and r.reason is None


def test_positive_minimum_has_no_net_degradation_point():
    r = find_onset(range(1, 8), [5, 3, 1, 0, 2, 4, 6])  # smoothed 3, 4/3, 1, 2, 4
    assert r.onset_task_index == 4
    assert r.net_degradation_task_index is None


def test_unsorted_input_is_sorted_first():
    r = find_onset([5, 1, 3, 2, 4, 7, 6], [2, 5, 1, 3, 0, 6, 4])
    assert r.onset_task_index == 4


def test_plateau_ties_take_the_earliest_even_with_rounding():
    # smoothed at x=3..6 are all 0.6/3 but summed in different orders (0.3+0.1+0.2 != 0.1+0.2+0.3 in floats)
    y = [0.7, 0.3, 0.1, 0.2, 0.3, 0.1, 0.2, 0.6, 0.9]
    r = find_onset(range(1, 10), y)
    assert r.onset_task_index == 3
    assert find_onset(range(1, 10), [4, 2, 1, 1, 1, 1, 1, 3, 5]).onset_task_index == 4


@pytest.mark.parametrize("y, onset", [
    ([1, 2, 3, 4, 5, 6], 1),   # monotonically increasing: minimum at the first smoothed point
    ([0, 0, 0, 3, 3, 0, 0, 0, 3], 1),  # smoothed 0,1,2,2,1,0,1: tie of the first point and x=6 -> earliest
    ([2, 1, 3, 4, 5], 1),  # smoothed 2, 8/3, 4
])
def test_minimum_at_the_first_smoothed_point_is_a_left_censored_onset(y, onset):
    r = find_onset(range(len(y)), y)
    assert r.onset_task_index == onset and r.code == "left_censored" and r.censored == "left"
    assert "at or before" in r.reason and r.lower_bound is None
    assert r.to_json()["censored"] == "left" and r.to_json()["code"] == "left_censored"


@pytest.mark.parametrize("y", [[6, 5, 4, 3, 2, 1], [0, 0, 0, 5, 0, 0, -1], [3, 2, 1, 0]])
def test_minimum_at_the_last_smoothed_point_is_no_onset_with_a_lower_bound(y):
    r = find_onset(range(len(y)), y)
    assert r.onset_task_index is None and r.code == "still_improving" and r.censored == "right"
    assert r.lower_bound == len(y) - 2 and "still falling" in r.reason
    assert r.to_json()["lower_bound_task_index"] == len(y) - 2


def test_paper_schedule_minimum_at_task_6_is_onset_6_flagged():
    # probes after tasks 2, 6, 8, 10, 14, 16, ... (zh, de, ru of each cycle): the first window-3 mean
    # exists at task 6; arXiv:2606.24752's smallest models have their onset there
    x = [2, 6, 8, 10, 14, 16, 18, 22]
    r = find_onset(x, [0, -5, -4, 3, 5, 7, 8, 9])
    assert r.onset_task_index == 6 and r.code == "left_censored"
    assert "never falls" not in r.reason and "at or before" in r.reason


def test_interior_onset_has_code_onset_and_no_censoring():
    r = find_onset(range(1, 8), [5, 3, 1, 0, 2, 4, 6])
    assert r.code == "onset" and r.censored is None and r.reason is None and r.lower_bound is None


def test_increasing_curve_still_has_a_net_degradation_point():
    r = find_onset(range(1, 7), [-3, -2, -1, 0, 1, 2])  # smoothed -2, -1, 0, 1: left-censored at 2
    assert r.onset_task_index == 2 and r.code == "left_censored" and r.net_degradation_task_index == 5


@pytest.mark.parametrize("n, window", [(0, 3), (2, 3), (3, 3), (5, 5)])
def test_too_few_points(n, window):
    r = find_onset(range(n), np.arange(n, dtype=float)[::-1] ** 2, window)
    assert r.onset_task_index is None and r.code == "too_few_points" and "probe point(s)" in r.reason


def test_four_points_are_enough_for_window_3():
    assert find_onset(range(4), [3, 1, 0, 4]).onset_task_index == 1  # smoothed 4/3, 5/3: left-censored
    assert find_onset(range(4), [3, 1, 0, 4]).code == "left_censored"


def test_five_points_are_enough_for_window_3():
    assert find_onset(range(5), [3, 2, 0, 2, 3]).onset_task_index == 2


def test_window_5_differs_from_window_3():
    y = [8, 6, 5, 0, 6, 2, 1, 3, 9]
    # w=3: smoothed x=2..8 = 19/3, 11/3, 11/3, 8/3, 3, 2, 13/3 -> 7
    # w=5: smoothed x=3..7 = 5, 3.8, 2.8, 2.4, 4.2 -> 6
    assert find_onset(range(1, 10), y, 3).onset_task_index == 7
    r5 = find_onset(range(1, 10), y, 5)
    assert r5.onset_task_index == 6
    assert r5.smoothed == pytest.approx([5, 3.8, 2.8, 2.4, 4.2])
    assert moving_average(y, 1) == pytest.approx(y)


def test_fractional_task_indices_and_bad_input():
    r = find_onset([0.5, 1.0, 1.5, 2.0, 2.5], [0, -1, -2, -1, 0])
    assert r.onset_task_index == 1.5 and r.to_json()["onset_task_index"] == 1.5
    with pytest.raises(PlasticError, match="odd"):
        find_onset(range(5), range(5), 4)
    with pytest.raises(PlasticError, match="duplicate task_index 2"):
        find_onset([1, 2, 2, 3, 4], range(5))


def test_vectorised_rule_of_the_bootstrap_agrees_with_find_onset():
    from plasticlm.onset import _onset_of_smoothed

    rng = np.random.default_rng(0)
    for trial in range(300):
        n, w = int(rng.integers(3, 12)), int(rng.choice([1, 3, 5]))
        y = np.round(rng.standard_normal(n), 1)  # rounding makes ties common
        x = np.arange(n) + 1.0
        h = (w - 1) // 2
        fast = _onset_of_smoothed(moving_average(y, w)[None, :], x[h: n - h])[0]
        slow = find_onset(x, y, w).onset_task_index
        assert (np.isnan(fast) and slow is None) or fast == slow, (trial, y, w)


# ------------------------------------------------------------------ bootstrap


def _v_curves(n_seq: int = 64, seed: int = 0):
    """Per-sequence probe losses whose dAUC is a clear V with its minimum at task index 6."""
    rng = np.random.default_rng(seed)
    x = np.arange(1, 13)
    level = 3.0 + 0.1 * np.abs(x - 6)
    steps = np.array([0, 5, 10, 20])
    shape = np.array([1.5, 1.2, 1.0, 0.9])[:, None]
    seq = 1.0 + 0.2 * rng.standard_normal(n_seq)  # sequences differ in difficulty
    curves = [lv * shape * seq[None, :] + 0.05 * rng.standard_normal((4, n_seq)) for lv in level]
    return curves, steps, x


def test_bootstrap_ci_contains_true_onset_and_is_deterministic():
    curves, steps, x = _v_curves()
    assert find_onset(x, score_curve(curves, steps)).onset_task_index == 6
    a = onset_ci_from_curves(curves, steps, x, n_boot=300, seed=3)
    b = onset_ci_from_curves(curves, steps, x, n_boot=300, seed=3)
    assert a.ci is not None and a.ci[0] <= 6 <= a.ci[1]
    np.testing.assert_array_equal(a.draws, b.draws)
    assert a.fraction_null == 0.0 and a.to_json()["ci"] == [a.ci[0], a.ci[1]]


def test_generic_bootstrap_matches_the_curve_bootstrap():
    curves, steps, x = _v_curves(n_seq=20, seed=1)
    noisy = [c + np.random.default_rng(k).standard_normal(c.shape) * 0.5 for k, c in enumerate(curves)]

    def score_fn(idx):
        return score_curve([c[:, idx] for c in noisy], steps)

    fast = onset_ci_from_curves(noisy, steps, x, n_boot=50, seed=7)
    slow = bootstrap_onset(score_fn, 20, x, n_boot=50, seed=7)
    np.testing.assert_allclose(fast.draws, slow.draws)
    assert fast.ci == slow.ci


def test_bootstrap_reports_null_fraction():
    steps = np.array([0, 1])
    curves = [np.full((2, 8), 3.0 - 0.1 * k) + np.linspace(0, 0.01, 8) for k in range(6)]  # always falling
    ci = onset_ci_from_curves(curves, steps, range(6), n_boot=20)
    assert ci.ci is None and ci.fraction_null == 1.0


# ------------------------------------------------------------------ CLI


def test_cli_onset_json(tmp_path, capsys):
    p = tmp_path / "s.csv"
    p.write_text("task_index,score,note\n3,-1.0,a\n1,0,b\n2,-0.5,c\n4,-1.2,d\n5,-0.4,e\n6,0.8,f\n7,1.5,g\n")
    assert main(["onset", "--scores", str(p), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"onset_task_index", "onset_tokens", "method", "window", "ci95", "smoothed",
                        "net_degradation_task_index", "reason"}
    assert doc["onset_task_index"] == 3 and doc["onset_tokens"] is None and doc["ci95"] is None
    assert doc["net_degradation_task_index"] == 6
    assert [s["task_index"] for s in doc["smoothed"]] == [2, 3, 4, 5, 6]
    assert doc["code"] == "onset" and doc["censored"] is None
    assert main(["onset", "--scores", str(p)]) == 0
    assert "onset: task_index 3 [onset]" in capsys.readouterr().out


@pytest.mark.parametrize("text, problem", [
    ("task,score\n1,2\n", "missing column(s) task_index"),
    ("task_index,score\n1,2\n2,abc\n", "line 3: column 'score' = 'abc' is not a number"),
    ("task_index,score\n1,2\n2,3\n1,4\n", "duplicate task_index 1 on lines 2 and 4"),
    ("task_index,score\n", "no data rows"),
])
def test_cli_onset_bad_csv_exits_2_naming_the_file(tmp_path, capsys, text, problem):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    assert main(["onset", "--scores", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and problem in err


def test_earliest_locatable_is_the_first_smoothed_point():
    from plasticlm.onset import earliest_locatable

    x = [40, 8, 16, 32, 24]  # any order
    assert earliest_locatable(x) == 16 and earliest_locatable(x, window=1) == 8
    assert earliest_locatable(x[:3]) is None  # 3 points: one smoothed point, no minimum to tell
    rising = [3.0, 3.5, 4.0, 4.5, 5.5, 6.0]  # smoothed minimum at the first smoothed point
    assert find_onset([8, 16, 24, 32, 40, 48], rising).onset_task_index == \
        earliest_locatable([8, 16, 24, 32, 40, 48]) == 16
    with pytest.raises(PlasticError, match="duplicate"):
        earliest_locatable([8, 8, 16, 24, 32])


# ------------------------------------------------------------------ seeds


def test_seed_onset_mean_curve_per_seed_onsets_and_runs_bootstrap():
    from plasticlm.onset import seed_onset

    x = [8, 16, 24, 32, 40, 48]
    curves = [[0, -2, -3, -1, 2, 4], [0, -1, -4, -3, 1, 3], [0, -3, -2, 0, 1, 5]]
    r = seed_onset(x, curves, n_boot=500, seed=1)
    mean = np.mean(curves, axis=0)
    assert r.onset_task_index == find_onset(x, mean).onset_task_index == 24
    assert [o.onset_task_index for o in r.seed_onsets] == [24, 24, 16]
    assert not r.seeds_agree and r.spread == (16, 24)
    lo, hi = r.ci.ci
    assert lo <= 24 <= hi and lo >= 16 and hi <= 32
    # identical seeds: the interval collapses and they agree; one seed: no interval
    same = seed_onset(x, [curves[0]] * 3, n_boot=200)
    assert same.seeds_agree and same.ci.ci == (24, 24)
    assert seed_onset(x, [curves[0]], n_boot=200).ci is None
    doc = r.to_json()
    assert doc["seed_onsets"] == [24, 24, 16] and doc["ci95_runs"] == [lo, hi] and doc["n_seeds"] == 3


def test_seed_onset_bad_shape():
    from plasticlm.onset import seed_onset

    with pytest.raises(PlasticError, match="n_seeds"):
        seed_onset([1, 2, 3, 4], [[1, 2, 3]])


def test_cli_onset_left_censored_and_still_improving_codes(tmp_path, capsys):
    p = tmp_path / "paper.csv"
    p.write_text("task_index,score\n2,0\n6,-5\n8,-4\n10,3\n14,5\n16,7\n18,8\n22,9\n")
    assert main(["onset", "--scores", str(p), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["onset_task_index"] == 6 and doc["code"] == "left_censored" and doc["censored"] == "left"
    assert main(["onset", "--scores", str(p)]) == 0
    assert "at or before task_index 6 [left_censored]" in capsys.readouterr().out
    q = tmp_path / "falling.csv"
    q.write_text("task_index,score\n1,0\n2,-1\n3,-2\n4,-3\n5,-4\n")
    assert main(["onset", "--scores", str(q), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["onset_task_index"] is None and doc["code"] == "still_improving"
    assert doc["censored"] == "right" and doc["lower_bound_task_index"] == 4
