import numpy as np
import pytest

from fedray.core.grouping import (
    FIELD_INDEX,
    HW_FIELDS,
    draw_profiles,
    group_by_thresholds,
    group_devices,
    group_kmeans,
    merge_small_groups,
)

HIGH = dict(cores=8, memory_gb=16, gflops=200, up_mbps=100, down_mbps=200, availability=0.95)
MID = dict(cores=4, memory_gb=4, gflops=40, up_mbps=20, down_mbps=50, availability=0.85)
LOW = dict(cores=2, memory_gb=2, gflops=5, up_mbps=5, down_mbps=20, availability=0.7)
G = FIELD_INDEX["gflops"]


def _profiles_with_gflops(values):
    """Profiles that differ only in gflops (other fields constant)."""
    p = np.ones((len(values), len(HW_FIELDS)))
    p[:, G] = values
    return p


def test_draw_profiles_shape_shares_and_clipping():
    rng = np.random.default_rng(0)
    prof, tier = draw_profiles([HIGH, MID, LOW], [0.2, 0.3, 0.5], 1000, rng)
    assert prof.shape == (1000, len(HW_FIELDS)) and prof.dtype == np.float64
    assert np.bincount(tier).tolist() == [200, 300, 500]
    assert np.all(prof[:, FIELD_INDEX["availability"]] <= 1.0)
    assert np.all(prof[:, FIELD_INDEX["availability"]] > 0)
    cores = prof[:, FIELD_INDEX["cores"]]
    assert np.all(cores >= 1) and np.array_equal(cores, np.rint(cores))
    # tier values are the medians of the multiplicative noise
    for t, m in enumerate([HIGH, MID, LOW]):
        assert np.median(prof[tier == t, G]) == pytest.approx(m["gflops"], rel=0.05)
    # tiers are shuffled, not laid out in blocks
    assert not np.array_equal(tier, np.sort(tier))


def test_draw_profiles_deterministic_and_rounding():
    a = draw_profiles([HIGH, LOW], [1 / 3, 2 / 3], 10, np.random.default_rng(7))
    b = draw_profiles([HIGH, LOW], [1 / 3, 2 / 3], 10, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.bincount(a[1]).tolist() == [3, 7]
    with pytest.raises(ValueError, match="missing"):
        draw_profiles([{"gflops": 1.0}], [1.0], 3, np.random.default_rng(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_three_clusters(seed):
    rng = np.random.default_rng(seed)
    # tiers listed out of speed order: labels must still come out ordered by gflops
    prof, tier = draw_profiles([MID, LOW, HIGH], [0.3, 0.5, 0.2], 300, rng, spread=0.1)
    labels = group_kmeans(prof, 3, rng)
    expected = np.array([1, 2, 0])[tier]  # HIGH -> 0, MID -> 1, LOW -> 2
    assert np.array_equal(labels, expected)


@pytest.mark.parametrize("seed", range(10))
def test_kmeans_is_not_split_by_fields_that_carry_only_noise(seed):
    """Tiers alike in cores, memory and availability (only per-device noise there) still come apart by speed."""
    rng = np.random.default_rng(seed)
    same = dict(cores=4, memory_gb=8, availability=1.0)
    tiers = [{**same, "gflops": g, "up_mbps": g / 2, "down_mbps": g} for g in (200.0, 40.0, 5.0)]
    prof, tier = draw_profiles(tiers, [0.25, 0.25, 0.5], 40, rng)
    assert np.array_equal(group_kmeans(prof, 3, rng), tier)


def test_kmeans_labels_ordered_by_mean_gflops_and_deterministic():
    prof, _ = draw_profiles([HIGH, MID, LOW], [0.3, 0.3, 0.4], 200, np.random.default_rng(3), spread=0.4)
    a = group_kmeans(prof, 4, np.random.default_rng(11))
    b = group_kmeans(prof, 4, np.random.default_rng(11))
    assert np.array_equal(a, b)
    means = [prof[a == g, G].mean() for g in range(a.max() + 1)]
    assert means == sorted(means, reverse=True)
    with pytest.raises(ValueError):
        group_kmeans(prof[:2], 3, np.random.default_rng(0))


def test_thresholds_at_boundaries():
    p = _profiles_with_gflops([1.0, 5.0 - 1e-9, 5.0, 20.0, 50.0 - 1e-9, 50.0, 500.0])
    labels = group_by_thresholds(p, [5.0, 50.0])
    assert labels.tolist() == [2, 2, 1, 1, 1, 0, 0]
    # another field
    p[:, FIELD_INDEX["up_mbps"]] = [1, 2, 3, 4, 5, 6, 7]
    assert group_by_thresholds(p, [4], field="up_mbps").tolist() == [1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="ascending"):
        group_by_thresholds(p, [50.0, 5.0])
    with pytest.raises(ValueError, match="unknown hardware field"):
        group_by_thresholds(p, [1.0], field="tflops")


def test_small_group_merged_into_nearest_and_reported():
    rng = np.random.default_rng(5)
    prof, tier = draw_profiles([HIGH, MID, LOW], [0.3, 0.3, 0.4], 60, rng, spread=0.05)
    # two devices slightly slower than MID: a group of their own, nearest to MID
    odd = np.array([[4, 4, 30, 18, 45, 0.85], [4, 4, 31, 18, 45, 0.85]], dtype=float)
    prof = np.vstack([prof, odd])
    labels_in = np.concatenate([np.array([0, 1, 3])[tier], [2, 2]])  # HIGH=0, MID=1, odd=2, LOW=3
    labels, merges = merge_small_groups(labels_in, prof, min_size=3)
    assert merges == [(2, 1)]
    assert np.array_equal(labels[-2:], [1, 1])
    assert np.array_equal(labels[:-2], np.array([0, 1, 2])[tier])  # relabelled 0..G-1
    # nothing small: unchanged, no merges
    same, none = merge_small_groups(labels, prof, min_size=3)
    assert np.array_equal(same, labels) and none == []


def test_merge_picks_nearest_not_largest_and_orders_by_gflops():
    # groups by gflops: big slow group (10 devices), a fast group (3), and one fast straggler
    gf = [1.0] * 10 + [100.0, 110.0, 120.0] + [90.0]
    p = _profiles_with_gflops(gf)
    labels_in = np.array([7] * 10 + [4] * 3 + [9])
    labels, merges = merge_small_groups(labels_in, p, min_size=2)
    assert merges == [(9, 4)]
    assert labels.tolist() == [1] * 10 + [0] * 4


def test_merge_stops_at_one_group_and_compacts_empty_labels():
    p = _profiles_with_gflops([1.0, 2.0, 300.0])
    labels, merges = merge_small_groups(np.array([0, 0, 2]), p, min_size=5)
    assert labels.tolist() == [0, 0, 0] and len(merges) == 1
    labels, merges = merge_small_groups(np.array([5, 5, 2]), p, min_size=1)
    assert labels.tolist() == [1, 1, 0] and merges == []


def test_group_devices_dispatch():
    rng = np.random.default_rng(0)
    prof, tier = draw_profiles([HIGH, MID, LOW], [0.3, 0.3, 0.4], 90, rng, spread=0.1)
    labels, merges = group_devices(prof, "thresholds", thresholds=[15.0, 100.0])
    assert np.array_equal(labels, tier) and merges == []
    labels, _ = group_devices(prof, "kmeans", k=3, rng=np.random.default_rng(1))
    assert np.array_equal(labels, tier)
    with pytest.raises(ValueError, match="'spectral'"):
        group_devices(prof, "spectral")
    with pytest.raises(ValueError, match="thresholds"):
        group_devices(prof, "thresholds")


def test_kmeans_scales_vectorised():
    prof, tier = draw_profiles([HIGH, MID, LOW], [0.2, 0.3, 0.5], 10_000, np.random.default_rng(0), spread=0.1)
    labels, merges = group_devices(prof, "kmeans", k=3, rng=np.random.default_rng(0))
    assert np.array_equal(labels, tier) and merges == []
