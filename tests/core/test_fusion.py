import numpy as np
import pytest

from fedray.core.fusion import share_overlap, weighted_mean
from fedray.core.selection import participant_count, select


def test_weighted_mean_weights_by_samples():
    a = {"w": np.array([1.0, 0.0], np.float32)}
    b = {"w": np.array([0.0, 4.0], np.float32)}
    out = weighted_mean([a, b], [3, 1])
    np.testing.assert_allclose(out["w"], [0.75, 1.0])


def test_weighted_mean_rejects_bad_weights():
    with pytest.raises(ValueError):
        weighted_mean([{"w": np.zeros(1, np.float32)}], [0])


def test_share_overlap_averages_common_slice():
    big = {"e": np.ones((2, 4), np.float32)}
    small = {"e": np.full((2, 2), 3.0, np.float32)}
    b, s = share_overlap([big, small])
    np.testing.assert_allclose(b["e"], [[2, 2, 1, 1], [2, 2, 1, 1]])
    np.testing.assert_allclose(s["e"], [[2, 2], [2, 2]])


def test_selection_is_seeded_distinct_and_sized():
    devices = np.arange(100)
    assert participant_count(0.1, 100) == 10 and participant_count(64, 10) == 10
    a = select(devices, 10, 1.5, np.random.default_rng(4))
    b = select(devices, 10, 1.5, np.random.default_rng(4))
    assert len(a) == 15 == len(set(a.tolist())) and (a == b).all()
