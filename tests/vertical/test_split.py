"""The seeded-hash validation split and early stopping."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedray.vertical.split import EarlyStopping, train_first_order, validation_mask


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60, unique=True),
       st.integers(0, 2**31), st.floats(0.0, 0.9))
def test_split_of_an_id_does_not_depend_on_the_other_ids(ids, seed, fraction):
    """Each party holds the ids in its own order: the split must be a function of (seed, id) only."""
    mask = validation_mask(ids, fraction, seed)
    perm = np.random.default_rng(seed).permutation(len(ids))
    assert validation_mask([ids[i] for i in perm], fraction, seed).tolist() == mask[perm].tolist()
    half = ids[: len(ids) // 2]
    assert validation_mask(half, fraction, seed).tolist() == mask[: len(half)].tolist()


def test_fraction_and_seed():
    ids = [f"c{i}" for i in range(20000)]
    mask = validation_mask(ids, 0.2, 0)
    assert abs(mask.mean() - 0.2) < 0.01  # a biased draw (e.g. only high bytes) would miss this
    other = validation_mask(ids, 0.2, 1)
    assert abs((mask & other).mean() - 0.04) < 0.01  # another seed draws an independent split
    assert not validation_mask(ids, 0.0, 0).any()
    with pytest.raises(ValueError, match="must be >= 0 and < 1"):
        validation_mask(ids, 1.0, 0)


def test_train_first_order_keeps_aligned_order_within_each_part():
    ids = [f"c{i}" for i in range(200)]
    order, n_train = train_first_order(ids, 0.3, 5)
    mask = validation_mask(ids, 0.3, 5)
    assert n_train == int((~mask).sum())
    assert order[:n_train].tolist() == np.flatnonzero(~mask).tolist()
    assert order[n_train:].tolist() == np.flatnonzero(mask).tolist()


def test_early_stopping_counts_iterations_without_improvement():
    stop = EarlyStopping(patience=2, tolerance=0.01)
    assert [stop.update(i, v) for i, v in enumerate([1.0, 0.9, 0.895, 0.95, 0.5], 1)] == [False, False, False, True, False]
    assert stop.best_iteration == 5 and stop.waited == 0
    never = EarlyStopping(patience=0)
    assert not any(never.update(i, 1.0) for i in range(1, 50))
    nan = EarlyStopping(patience=1)
    assert not nan.update(1, math.nan) and not nan.update(2, math.nan)
