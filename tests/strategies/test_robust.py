import statistics

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from fedray.strategies import robust
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.robust import (Krum, Median, TrimmedMean, coordinate_median, krum_scores, multi_krum, stack,
                                      trimmed_mean, unstack)

shapes_st = st.lists(array_shapes(min_dims=0, max_dims=3, max_side=4), min_size=1, max_size=3)


def random_round(seed: int, n: int, shapes: list[tuple[int, ...]]):
    """Global weights, n deltas shaped like them and positive integer sample counts, from one seed."""
    rng = np.random.default_rng(seed)
    params = {f"t{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    updates = [{k: rng.normal(size=p.shape).astype(np.float32) for k, p in params.items()} for _ in range(n)]
    return params, updates, rng.integers(1, 1000, n).tolist()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), shapes=shapes_st)
def test_stack_and_unstack_round_trip(seed, n, shapes):
    params, updates, _ = random_round(seed, n, shapes)
    matrix = stack(params, updates)
    assert matrix.dtype == np.float32 and matrix.shape == (n, sum(int(np.prod(s)) for s in shapes))
    for row, update in zip(matrix, updates):
        back = unstack(params, row)
        for k in params:
            assert back[k].shape == params[k].shape
            np.testing.assert_array_equal(back[k], update[k])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 8), columns=st.integers(1, 6))
def test_median_matches_statistics_median_per_coordinate(seed, n, columns):
    matrix = np.random.default_rng(seed).normal(size=(n, columns)).astype(np.float32)
    expected = [statistics.median(matrix[:, j].tolist()) for j in range(columns)]
    np.testing.assert_allclose(coordinate_median(matrix), expected, rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), columns=st.integers(1, 6), fraction=st.floats(0.0, 0.49))
def test_trimmed_mean_matches_scipy_and_a_per_coordinate_loop(seed, n, columns, fraction):
    matrix = np.random.default_rng(seed).normal(size=(n, columns)).astype(np.float32)
    drop = int(fraction * n)
    by_hand = [np.mean(sorted(matrix[:, j].tolist())[drop:n - drop]) for j in range(columns)]
    got = trimmed_mean(matrix, fraction)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, by_hand, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got, scipy.stats.trim_mean(matrix, fraction, axis=0), rtol=1e-6, atol=1e-7)


def brute_force_multi_krum(rows: np.ndarray, byzantine: int, keep: int):
    """Blanchard et al.'s multi-Krum by loops: scores, then the mean of the `keep` best rows."""
    n = len(rows)
    scores = []
    for i in range(n):
        distances = sorted(float(((rows[i].astype(np.float64) - rows[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(distances[:n - byzantine - 2]))
    best = sorted(range(n), key=lambda i: (scores[i], i))[:keep]
    return np.array(scores), np.mean([rows[i].astype(np.float64) for i in best], axis=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), byzantine=st.integers(0, 3), extra=st.integers(0, 4), columns=st.integers(1, 8),
       data=st.data())
def test_multi_krum_matches_brute_force(seed, byzantine, extra, columns, data):
    n = 2 * byzantine + 3 + extra
    keep = data.draw(st.integers(1, n - byzantine))
    rng = np.random.default_rng(seed)
    matrix = (rng.normal(size=(n, columns)) * rng.uniform(0.1, 10.0, size=(n, 1)) + 5.0).astype(np.float32)
    scores, expected = brute_force_multi_krum(matrix, byzantine, keep)
    np.testing.assert_allclose(krum_scores(matrix, byzantine), scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(multi_krum(matrix, byzantine, keep), expected, rtol=1e-6, atol=1e-6)


def test_krum_scores_summed_over_several_gram_blocks_match_brute_force(monkeypatch):
    monkeypatch.setattr(robust, "GRAM_BLOCK", 4)  # 11 columns: blocks of 4, 4 and 3
    matrix = (np.random.default_rng(2).normal(size=(9, 11)) + 3.0).astype(np.float32)
    scores, _ = brute_force_multi_krum(matrix, 2, 1)
    np.testing.assert_allclose(robust.krum_scores(matrix, 2), scores, rtol=1e-6)


def test_krum_with_keep_one_returns_the_most_central_update():
    rows = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.4, 0.6], [9.0, 9.0]], np.float32)
    np.testing.assert_array_equal(multi_krum(rows, byzantine=1, keep=1), rows[4])


def attacked_round(seed: int, n: int = 20, attackers: int = 4, columns: int = 60):
    """n honest deltas around a common direction; `attackers` of them replaced by themselves sign-flipped and x10."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=columns)
    honest = (truth + 0.1 * rng.normal(size=(n, columns))).astype(np.float32)
    bad = rng.choice(n, attackers, replace=False)
    sent = honest.copy()
    sent[bad] *= -10.0
    clean_mean = np.delete(honest, bad, axis=0).mean(axis=0)
    weights = np.full(n, 100)
    weights[bad] = 10_000  # attackers also claim many samples: robust rules must not listen
    params = {"w": np.zeros(columns, np.float32)}
    return params, [{"w": row} for row in sent], weights.tolist(), clean_mean


@pytest.mark.parametrize("seed", range(5))
def test_robust_rules_resist_twenty_percent_sign_flipped_updates_and_fedavg_does_not(seed):
    params, updates, weights, clean_mean = attacked_round(seed)

    def relative_error(strategy):
        return np.linalg.norm(strategy.aggregate(0, params, updates, weights)["w"] - clean_mean) / np.linalg.norm(clean_mean)

    assert relative_error(Median()) < 0.1
    assert relative_error(TrimmedMean(trim_fraction=0.2)) < 0.1
    assert relative_error(Krum(byzantine=4)) < 0.01
    assert relative_error(FedAvg()) > 1.0


@pytest.mark.parametrize("strategy, rule", [
    (Median(2.0), coordinate_median),
    (TrimmedMean(2.0, 0.25), lambda matrix: trimmed_mean(matrix, 0.25)),
    (Krum(2.0, byzantine=1, keep=2), lambda matrix: multi_krum(matrix, 1, 2)),
], ids=["median", "trimmed_mean", "krum"])
def test_robust_rules_ignore_sample_weights_and_take_a_server_step(strategy, rule):
    params, updates, _ = random_round(5, 6, [(3, 2), (4,)])
    even = strategy.aggregate(0, params, updates, [1] * 6)
    skewed = strategy.aggregate(0, params, updates, [1, 10**6, 3, 1, 7, 2])
    direction = unstack(params, rule(stack(params, updates)))
    for k in params:
        np.testing.assert_array_equal(even[k], skewed[k])
        assert even[k].dtype == np.float32
        np.testing.assert_allclose(even[k], params[k] + 2.0 * direction[k], rtol=1e-6)


def test_robust_rules_reject_what_they_cannot_do():
    with pytest.raises(ValueError, match="trim_fraction"):
        TrimmedMean(trim_fraction=0.5)
    with pytest.raises(ValueError, match="drops all 4"):
        trimmed_mean(np.zeros((4, 2), np.float32), 0.5)
    for kwargs, word in [(dict(byzantine=-1), "byzantine"), (dict(byzantine=1.5), "byzantine"), (dict(keep=0), "keep")]:
        with pytest.raises(ValueError, match=word):
            Krum(**kwargs)
    params, updates, weights = random_round(0, 6, [(3,)])
    assert Krum(byzantine=2).required_updates() == 7 and Krum(byzantine=1, keep=5).required_updates() == 6
    with pytest.raises(ValueError, match="needs at least 7 updates, got 6"):
        Krum(byzantine=2).aggregate(0, params, updates, weights)
    with pytest.raises(ValueError, match="needs at least 8 updates, got 6"):
        Krum(byzantine=1, keep=7).aggregate(0, params, updates, weights)
    with pytest.raises(ValueError, match="update 0"):
        Median().aggregate(0, params, [{"w": np.zeros(3, np.float32)}], [1])
