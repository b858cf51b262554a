import itertools
import os

import numpy as np
import pytest

from fedray.privacy import shamir


def test_any_threshold_shares_rebuild_the_secret_and_fewer_are_refused():
    secret = os.urandom(32)
    points = np.array([3, 8, 11, 20, 21])
    shares = shamir.split(secret, points, 3)
    for subset in itertools.combinations(range(5), 3):
        idx = list(subset)
        assert shamir.combine(points[idx], shares[idx], 3, 32) == secret
    with pytest.raises(shamir.ShamirError, match="2 shares, 3 needed"):
        shamir.combine(points[:2], shares[:2], 3, 32)


def test_shares_are_fresh_each_time_and_a_tampered_share_does_not_give_the_secret():
    secret = os.urandom(32)
    points = np.array([1, 2, 3])
    a, b = shamir.split(secret, points, 2), shamir.split(secret, points, 2)
    assert not np.array_equal(a, b)
    a[0, 0] = (a[0, 0] + 1) % shamir.PRIME
    try:
        assert shamir.combine(points[:2], a[:2], 2, 32) != secret
    except shamir.ShamirError:
        pass


def test_one_share_below_threshold_is_uniform_whatever_the_secret():
    """With threshold 2 a single share is secret + c*x for uniform c: its chunks spread over the whole field."""
    shares = np.stack([shamir.split(b"\0" * 32, np.array([5, 6]), 2)[0] for _ in range(300)]).ravel()
    counts, _ = np.histogram(shares, bins=8, range=(0, shamir.PRIME))
    assert counts.min() > 0.6 * counts.mean()


def test_holder_points_must_be_distinct_nonzero_and_threshold_in_range():
    with pytest.raises(shamir.ShamirError):
        shamir.split(b"x" * 32, np.array([0, 1]), 1)
    with pytest.raises(shamir.ShamirError):
        shamir.split(b"x" * 32, np.array([2, 2]), 1)
    with pytest.raises(shamir.ShamirError):
        shamir.split(b"x" * 32, np.array([1, 2]), 3)
