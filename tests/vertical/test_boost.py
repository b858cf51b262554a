"""SecureBoost's plaintext maths: bins, histograms, split search."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from fedray.vertical.boost import QuantileBins, best_split, histograms, leaf_weight

values = hnp.arrays(np.float64, st.tuples(st.integers(1, 60), st.integers(1, 3)),
                    elements=st.one_of(st.floats(-1e6, 1e6), st.just(np.nan)))


@settings(max_examples=80, deadline=None)
@given(values, st.integers(2, 40))
def test_bin_test_equals_the_raw_threshold_test(X, bins):
    """"bin <= b" must be "x < threshold(b)": a provider decides splits on bins and scores new rows on
    raw values. Catches an off-by-one edge (side="left") or a threshold from the wrong edge."""
    qb = QuantileBins.fit(X, bins)
    codes = qb.codes(X)
    assert codes.max() <= bins and np.array_equal(codes == bins, np.isnan(X))
    for j in range(X.shape[1]):
        assert len(qb.edges[j]) <= bins - 1
        present = ~np.isnan(X[:, j])
        for b in range(bins):
            assert np.array_equal((codes[present, j] <= b), X[present, j] < qb.threshold(j, b))


def test_quantile_bins_are_balanced_and_ignore_missing_cells():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10000, 1))
    X[::10] = np.nan
    codes = QuantileBins.fit(X, 8).codes(X)
    counts = np.bincount(codes[:, 0], minlength=9)
    assert counts[8] == 1000 and counts[:8].min() > 0.9 * 9000 / 8


def test_histograms_and_best_split_against_brute_force():
    """Catches a cumsum off by one, a missing-direction mix-up, and a gain without the parent term."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 6, (200, 3)).astype(np.int16)
    codes[rng.random((200, 3)) < 0.1] = 5  # bins=5: index 5 is the missing bin
    g, h = rng.standard_normal(200), rng.uniform(0.1, 0.3, 200)
    G, H = histograms(codes, g, h, 5)
    for j, b in itertools.product(range(3), range(6)):
        rows = codes[:, j] == b
        assert G[j, b] == pytest.approx(g[rows].sum()) and H[j, b] == pytest.approx(h[rows].sum())
    lam, mcw = 1.0, 2.0
    best = (0.0, None)
    score = lambda gg, hh: gg ** 2 / (hh + lam)  # noqa: E731
    for j, b, miss in itertools.product(range(3), range(4), (False, True)):
        left = (codes[:, j] <= b) & (codes[:, j] < 5) | (codes[:, j] == 5) & miss
        if h[left].sum() < mcw or h[~left].sum() < mcw:
            continue
        gain = 0.5 * (score(g[left].sum(), h[left].sum()) + score(g[~left].sum(), h[~left].sum())
                      - score(g.sum(), h.sum()))
        if gain > best[0]:
            best = (gain, (j, b, miss))
    split = best_split(G, H, lam, mcw)
    assert (split.column, split.bin, split.missing_left) == best[1] and split.gain == pytest.approx(best[0])
    assert best_split(G, H, lam, min_child_weight=1e9) is None
    assert leaf_weight(2.0, 3.0, 1.0) == -0.5


def test_ties_go_to_the_lowest_column_and_tiny_gains_do_not_split():
    """Two columns with the same row partition tie: the lower column wins even when noise (below the
    tolerance) favours the other, so encrypted sums pick the split plaintext would. A gain below the
    tolerance is no split (a node of one class must not split on noise)."""
    from fedray.vertical.boost import GAIN_TOLERANCE

    codes = np.array([[0, 1], [0, 1], [1, 2], [1, 2]], dtype=np.int16)
    g, h = np.array([-1.0, -1.0, 1.0, 1.0]), np.full(4, 0.25)
    G, H = histograms(codes, g, h, 3)
    G[1] += 0.1 * GAIN_TOLERANCE  # noise in column 1's sums
    split = best_split(G, H, 1.0, 0.0)
    assert (split.column, split.bin, split.missing_left) == (0, 0, False)
    flat = histograms(codes, np.full(4, 1e-4), h, 3)
    assert best_split(*flat, 1.0, 0.0) is None
