"""Lazy synthetic users: each user's items drawn from its own seed, compact arrays up front, one generator."""
import numpy as np
from hypothesis import given, settings, strategies as st

from fedray.config import load_config
from fedray.data import leave_one_out, load_recdata, materialize, synthetic_ratings, synthetic_users


@settings(max_examples=20, deadline=None)
@given(users=st.integers(3, 30), items=st.integers(12, 80), seed=st.integers(0, 2**16))
def test_each_users_items_are_distinct_in_range_and_the_held_out_one_is_not_a_positive(users, items, seed):
    data = synthetic_users(users, items, 6, 4, 1.0, seed)
    for user in range(users):
        positives, test = data.holdout(user)
        assert len(np.unique(positives)) == len(positives) == data.counts()[user] >= 2
        assert positives.min() >= 0 and max(positives.max(), test) < items and test not in positives
        again = synthetic_users(users, items, 6, 4, 1.0, seed).holdout(user)  # seeded per user, not by call order
        assert np.array_equal(again[0], positives) and again[1] == test


@settings(max_examples=10, deadline=None)
@given(users=st.integers(3, 20), items=st.integers(12, 60), seed=st.integers(0, 2**16))
def test_the_ratings_table_and_the_lazy_users_are_the_same_data(users, items, seed):
    """synthetic_ratings writes the lazy users out; leave-one-out of it holds out the same item per user."""
    lazy = synthetic_users(users, items, 6, 4, 1.0, seed)
    table = leave_one_out(synthetic_ratings(users, items, 6, 4, 1.0, seed))
    full = materialize(lazy)
    for user in range(users):
        positives, test = lazy.holdout(user)
        assert sorted(table.item_ids[table.positives(user)]) == positives.tolist()
        assert table.item_ids[table.test_items[user]] == test
        assert np.array_equal(full.positives(user), positives) and full.test_items[user] == test


def test_a_million_users_cost_a_few_arrays_not_a_matrix():
    data = synthetic_users(1_000_000, 1000, 40, 8, 1.0, 0)
    held = sum(a.nbytes for a in (data.item_vec, data.popularity, data.interactions))
    assert held < 6 * 2**20  # 4 bytes a user plus the catalogue; a dense users x items draw would be gigabytes
    positives, test = data.holdout(999_999)
    assert len(positives) + 1 == data.interactions[999_999] and test not in positives


def test_config_limits_apply_to_the_lazy_users():
    cfg = load_config(None, ["data.synthetic.n_users=500", "data.max_users=120", "data.min_interactions=7",
                             "data.synthetic.mean_interactions=3"])
    data = load_recdata(cfg.data, cfg.seed)
    assert data.n_users == 120 and data.counts().min() >= 6  # seven items, one held out
