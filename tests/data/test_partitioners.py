"""Partitioners: every row on exactly one device, sorted int64 indices, seeded, and label skew that skews."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedray.data.partitioners import dirichlet, iid, natural, partition, size


def assert_cover(parts: list[np.ndarray], n_rows: int) -> None:
    """Each part sorted int64, and together the parts hold every row index exactly once."""
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    joined = np.concatenate(parts) if parts else np.empty(0, np.int64)
    assert np.array_equal(np.sort(joined), np.arange(n_rows))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


rows_and_devices = st.integers(1, 40).flatmap(lambda d: st.tuples(st.integers(d, 400), st.just(d)))


@settings(max_examples=60, deadline=None)
@given(rows_and_devices, st.integers(0, 2**32 - 1))
def test_iid_covers_once_with_near_equal_sizes(shape, seed):
    n_rows, n_devices = shape
    parts = iid(n_rows, n_devices, np.random.default_rng(seed))
    assert len(parts) == n_devices
    assert_cover(parts, n_rows)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert same(parts, iid(n_rows, n_devices, np.random.default_rng(seed)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 6), st.floats(0.05, 10.0), st.integers(1, 5), st.integers(0, 2**32 - 1),
       st.data())
def test_dirichlet_covers_once_and_respects_min_rows(n_devices, n_classes, alpha, min_rows, seed, data):
    n_rows = data.draw(st.integers(n_devices * min_rows, n_devices * min_rows + 300))
    labels = np.random.default_rng(seed).integers(0, n_classes, n_rows)
    parts = dirichlet(labels, n_devices, alpha, np.random.default_rng(seed), min_rows=min_rows)
    assert len(parts) == n_devices
    assert_cover(parts, n_rows)
    assert min(len(p) for p in parts) >= min_rows
    assert same(parts, dirichlet(labels, n_devices, alpha, np.random.default_rng(seed), min_rows=min_rows))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=200))
def test_natural_one_device_per_id_in_sorted_order(ids):
    ids = np.array(ids)
    parts = natural(ids)
    assert_cover(parts, len(ids))
    distinct = np.unique(ids)
    assert len(parts) == len(distinct)
    for value, part in zip(distinct, parts):
        assert np.array_equal(part, np.flatnonzero(ids == value))


@settings(max_examples=60, deadline=None)
@given(rows_and_devices, st.floats(0.0, 3.0), st.integers(0, 2**32 - 1))
def test_size_covers_once_with_every_device_non_empty(shape, sigma, seed):
    n_rows, n_devices = shape
    parts = size(n_rows, n_devices, np.random.default_rng(seed), sigma)
    assert len(parts) == n_devices
    assert_cover(parts, n_rows)
    assert min(len(p) for p in parts) >= 1
    assert same(parts, size(n_rows, n_devices, np.random.default_rng(seed), sigma))


def test_different_seeds_give_different_partitions():
    labels = np.arange(1000) % 3
    draws = [dirichlet(labels, 10, 0.5, np.random.default_rng(seed)) for seed in (0, 1)]
    assert not same(*draws)
    assert not same(*(iid(1000, 10, np.random.default_rng(seed)) for seed in (0, 1)))


def label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between each device's label mix and the global one."""
    n_classes = labels.max() + 1
    overall = np.bincount(labels, minlength=n_classes) / len(labels)
    mixes = np.stack([np.bincount(labels[p], minlength=n_classes) / len(p) for p in parts])
    return float(0.5 * np.abs(mixes - overall).sum(axis=1).mean())


def test_small_alpha_is_more_skewed_than_iid_and_large_alpha():
    labels = np.random.default_rng(7).integers(0, 5, 5000)
    skew = {name: [] for name in ("iid", "alpha=0.1", "alpha=100")}
    for seed in range(5):
        skew["iid"].append(label_skew(iid(len(labels), 20, np.random.default_rng(seed)), labels))
        skew["alpha=0.1"].append(label_skew(dirichlet(labels, 20, 0.1, np.random.default_rng(seed)), labels))
        skew["alpha=100"].append(label_skew(dirichlet(labels, 20, 100.0, np.random.default_rng(seed)), labels))
    assert min(skew["alpha=0.1"]) > 3 * max(skew["iid"])
    assert min(skew["alpha=0.1"]) > 3 * max(skew["alpha=100"])


def test_size_with_large_sigma_is_more_unequal_than_small():
    spread = {sigma: np.std([len(p) for p in size(10000, 50, np.random.default_rng(3), sigma)]) for sigma in (0.1, 2.0)}
    assert spread[2.0] > 3 * spread[0.1]


def test_dirichlet_rebalances_short_devices():
    labels = np.repeat(np.arange(2), 500)
    parts = dirichlet(labels, 100, 0.05, np.random.default_rng(0), min_rows=8)
    assert min(len(p) for p in parts) >= 8
    assert_cover(parts, len(labels))


@pytest.mark.parametrize("call, message", [
    (lambda rng: iid(3, 5, rng), "3 rows cannot give 5 devices"),
    (lambda rng: iid(3, 0, rng), "devices must be >= 1"),
    (lambda rng: dirichlet(np.zeros(50), 10, 0.5, rng, min_rows=6), "needs 60"),
    (lambda rng: dirichlet(np.zeros(50), 10, 0.0, rng), "alpha must be a positive"),
    (lambda rng: size(10, 3, rng, sigma=-1.0), "sigma must be a non-negative"),
    (lambda rng: partition("shards", n_devices=2, rng=rng, n_rows=10), "allowed methods are iid, dirichlet, natural, size"),
    (lambda rng: partition("iid", n_devices=2, rng=rng, n_rows=10, alpha=0.5), "takes no parameter alpha"),
    (lambda rng: partition("dirichlet", n_devices=2, rng=rng, n_rows=10), "needs a label column"),
    (lambda rng: partition("dirichlet", n_devices=2, rng=rng, labels=np.zeros(10)), "needs alpha"),
    (lambda rng: partition("natural", n_devices=3, rng=rng, ids=np.array([1, 1, 2])), "found 2 distinct ids"),
])
def test_bad_arguments_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.random.default_rng(0))


def test_partition_dispatches_to_the_named_method():
    labels = np.arange(300) % 3
    assert same(partition("iid", n_devices=4, rng=np.random.default_rng(1), labels=labels),
                iid(300, 4, np.random.default_rng(1)))
    assert same(partition("dirichlet", n_devices=4, rng=np.random.default_rng(1), labels=labels, alpha=0.3, min_rows=2),
                dirichlet(labels, 4, 0.3, np.random.default_rng(1), min_rows=2))
    assert same(partition("size", n_devices=4, rng=np.random.default_rng(1), n_rows=300, sigma=1.5),
                size(300, 4, np.random.default_rng(1), 1.5))
    assert same(partition("natural", n_devices=None, rng=np.random.default_rng(1), ids=labels), natural(labels))
