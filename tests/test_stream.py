import numpy as np
import pytest

from plasticlm.config import StreamConfig
from plasticlm.data.stream import LanguageStream
from plasticlm.errors import DataError

LANGS = ["aa", "bb", "cc"]
V = 300


def _tokens(sizes=(5000, 3000, 7000)):
    # each language owns a disjoint id range so a token's language is recoverable: lang i -> [100 i, 100 i + 99]
    rng = np.random.default_rng(0)
    return {
        lang: (100 * i + rng.integers(0, 100, n)).astype(np.uint16) for i, (lang, n) in enumerate(zip(LANGS, sizes))
    }


def _stream(kind="continual", **kw):
    cfg = StreamConfig(kind=kind, languages=LANGS, tokens_per_task=4 * 16 * 5, cycles=3, permuted_base="aa", **kw)
    return LanguageStream(cfg, _tokens(), seq_len=16, batch_size=4, vocab_size=V)


def test_continual_task_k_serves_exactly_tokens_per_task_of_its_language():
    s = _stream()
    assert s.steps_per_task == 5 and s.num_tasks == 9
    for k in range(s.num_tasks):
        assert s.task_index == k
        task = s.task(k)
        assert task.lang == LANGS[k % 3] and task.switch and task.cycle == k // 3
        fresh = 0
        for _ in range(s.steps_per_task):
            x, y = s.next_batch()
            assert x.shape == (4, 16) and np.array_equal(x[:, 1:], y[:, :-1])
            assert np.all(x // 100 == LANGS.index(task.lang))
            fresh += x.size
        assert fresh == s.cfg.tokens_per_task
    assert s.done
    with pytest.raises(StopIteration):
        s.next_batch()


def test_continual_reads_in_order_and_wraps_with_epoch_count():
    toks = _tokens()
    s = _stream()
    x, _ = s.next_batch()
    assert np.array_equal(x[0], toks["aa"][:16]) and np.array_equal(x[1], toks["aa"][16:32])
    while not s.done:
        s.next_batch()
    # aa served 3 tasks x 320 tokens = 960 of 5000: no wrap; shrink the data to force wraps
    small = {k: v[:100] for k, v in toks.items()}
    s2 = LanguageStream(s.cfg, small, 16, 4, V)
    while not s2.done:
        s2.next_batch()
    assert s2.epochs["aa"] == 960 // 100 and s2.cursor["aa"] == 960 % 100
    assert s2.reuse()["aa"] == pytest.approx(9.6)


@pytest.mark.parametrize("kind", ["continual", "stationary", "permuted"])
def test_restoring_state_reproduces_following_batches(kind):
    a = _stream(kind)
    for _ in range(7):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(12)]
    b = _stream(kind)
    b.load_state_dict(state)
    for ex, got in zip(expected, [b.next_batch() for _ in range(12)]):
        assert np.array_equal(ex[0], got[0]) and np.array_equal(ex[1], got[1])


def test_stationary_shares_match_weights_within_sampling_error():
    weights = [0.2, 0.3, 0.5]
    cfg = StreamConfig(kind="stationary", languages=LANGS, tokens_per_task=64 * 16 * 10, cycles=2, weights=weights)
    s = LanguageStream(cfg, _tokens((50_000, 50_000, 50_000)), 16, 64, V)
    counts = np.zeros(3)
    n_rows = 0
    while not s.done:
        x, _ = s.next_batch()
        counts += np.bincount(x[:, 0] // 100, minlength=3)
        n_rows += len(x)
    assert not s.task(0).switch and s.task(0).lang == "mix"
    share = counts / n_rows
    se = np.sqrt(np.array(weights) * (1 - np.array(weights)) / n_rows)
    assert np.all(np.abs(share - weights) < 4 * se)
    # same total token budget as the continual stream
    assert s.total_steps * 64 * 16 == cfg.tokens_per_task * 3 * 2


def test_permuted_tasks_use_fresh_permutations_of_the_base_language():
    s = _stream("permuted")
    toks = _tokens()["aa"]
    x0, _ = s.next_batch()
    p0 = s.permutation(0)
    assert np.array_equal(x0[0], p0[toks[:16]])
    for _ in range(s.steps_per_task - 1):
        s.next_batch()
    x1, _ = s.next_batch()
    p1 = s.permutation(1)
    assert not np.array_equal(p0, p1)
    assert np.array_equal(x1[0], p1[toks[s.steps_per_task * 64 : s.steps_per_task * 64 + 16]])
    held_out = s.probe_permutation()
    assert all(not np.array_equal(held_out, s.permutation(k)) for k in range(s.num_tasks))


def test_replay_mixes_earlier_languages_only():
    s = _stream(replay_fraction=0.5)
    for _ in range(s.steps_per_task):  # task 0: nothing to replay
        x, _ = s.next_batch()
        assert np.all(x // 100 == 0)
    x, _ = s.next_batch()  # task 1 (bb): half the rows replay aa
    assert list(x[:, 0] // 100) == [1, 1, 0, 0]


def test_rank_slices_partition_the_global_batch():
    cfg = _stream().cfg
    full = LanguageStream(cfg, _tokens(), 16, 4, V).next_batch()[0]
    parts = [LanguageStream(cfg, _tokens(), 16, 4, V, rank=r, world_size=2).next_batch()[0] for r in range(2)]
    assert np.array_equal(np.concatenate(parts), full)


def test_bad_input_errors():
    cfg = StreamConfig(languages=["aa", "zz"], tokens_per_task=640, cycles=1)
    with pytest.raises(DataError, match="'zz'"):
        LanguageStream(cfg, _tokens(), 16, 4, V)
    short = {"aa": np.zeros(10, np.uint16), "bb": np.zeros(1000, np.uint16), "cc": np.zeros(1000, np.uint16)}
    cfg = StreamConfig(languages=LANGS, tokens_per_task=640, cycles=1)
    with pytest.raises(DataError, match="lower model.seq_len"):
        LanguageStream(cfg, short, 16, 4, V)


def test_non_multiple_tokens_per_task_warns_and_rounds():
    cfg = StreamConfig(languages=LANGS, tokens_per_task=1000, cycles=1)
    with pytest.warns(UserWarning, match="not a multiple"):
        s = LanguageStream(cfg, _tokens(), 16, 4, V)
    assert s.tokens_per_task == 16 * 64
