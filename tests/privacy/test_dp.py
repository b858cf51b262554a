"""DP mechanics (pure, no Ray): clipping bounds what is summed, the noise has the configured law, and the
ternary cap bounds the norm of what secure aggregation sums."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from fedray.privacy import dp

FLOATS = hnp.arrays(np.float32, st.integers(1, 40), elements=st.floats(-1e4, 1e4, width=32))


def variance_in_chi2_interval(sample: np.ndarray, variance: float, alpha: float = 1e-4) -> bool:
    """Whether the sample variance of a zero-mean sample is consistent with `variance` (two-sided chi-square)."""
    n = sample.size
    statistic = float(np.sum(sample.astype(np.float64) ** 2)) / variance
    return stats.chi2.ppf(alpha / 2, n) < statistic < stats.chi2.ppf(1 - alpha / 2, n)


@given(FLOATS, FLOATS, st.floats(1e-3, 1e3))
@settings(max_examples=200, deadline=None)
def test_a_clipped_update_never_exceeds_the_bound_and_a_small_one_is_untouched(a, b, bound):
    out, clipped = dp.clip_update([a, b], bound)
    assert dp.l2_norm(out) <= bound
    norm = dp.l2_norm([a, b])
    assert clipped == (norm > bound)
    if not clipped:
        assert all(np.array_equal(x, y) for x, y in zip(out, [a, b]))
    else:  # only scaled: the direction is kept
        assert np.allclose(out[0] * norm, a * dp.l2_norm(out), rtol=1e-3, atol=1e-3 * bound)


def test_the_central_release_adds_gaussian_noise_of_std_z_times_clip_to_the_sum():
    rng = np.random.default_rng(1)
    updates = [{"w": np.zeros((300, 200), np.float32), "b": np.zeros(1000, np.float32)} for _ in range(3)]
    mean, _ = dp.central_mean(updates, clip=0.5, noise_multiplier=3.0, denominator=1.0, rng=rng)
    noise = np.concatenate([mean["w"].ravel(), mean["b"].ravel()])
    assert variance_in_chi2_interval(noise, (3.0 * 0.5) ** 2)
    assert abs(noise.mean()) < 5 * 1.5 / math.sqrt(noise.size)
    assert not variance_in_chi2_interval(noise, 3.0 ** 2)  # the test can tell z from z * clip


def test_the_central_release_clips_each_update_and_divides_by_the_fixed_denominator():
    big = {"w": np.full(4, 10.0, np.float32)}  # norm 20: clipped to 2
    small = {"w": np.array([0.5, 0, 0, 0], np.float32)}
    mean, clipped = dp.central_mean([big, small], clip=2.0, noise_multiplier=0.0, denominator=8.0,
                                    rng=np.random.default_rng(0))
    assert clipped == 1
    np.testing.assert_allclose(mean["w"], (np.ones(4) * (1 - dp.CLIP_MARGIN) + [0.5, 0, 0, 0]) / 8,
                               rtol=1e-6)


def test_noise_comes_from_fresh_entropy_not_from_numpys_global_seed():
    np.random.seed(0)
    a = dp.fresh_rng().normal(size=4)
    np.random.seed(0)
    b = dp.fresh_rng().normal(size=4)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("sigma", [0.6, 3.0, 40.0])
def test_the_discrete_gaussian_sampler_follows_its_probability_mass_function(sigma):
    rng = np.random.default_rng(7)
    sample = dp.discrete_gaussian(200_000, sigma, rng)
    assert sample.dtype == np.int64
    support = np.arange(-math.ceil(5 * sigma), math.ceil(5 * sigma) + 1)
    mass = np.exp(-support.astype(float) ** 2 / (2 * sigma * sigma))
    mass /= mass.sum()
    keep = mass * sample.size >= 5  # chi-square over the cells with enough expected counts, the tails pooled
    observed = np.array([np.count_nonzero(sample == y) for y in support[keep]] + [np.count_nonzero(~np.isin(sample, support[keep]))])
    expected = np.append(mass[keep], 1 - mass[keep].sum()) * sample.size
    assert stats.chisquare(observed, expected).pvalue > 1e-4
    exact_variance = float(np.sum(support.astype(float) ** 2 * mass))
    assert variance_in_chi2_interval(sample, exact_variance)


def test_skellam_noise_has_variance_sigma_squared():
    sample = dp.skellam(200_000, 4.0, np.random.default_rng(3))
    assert sample.dtype == np.int64 and variance_in_chi2_interval(sample, 16.0)


@pytest.mark.parametrize("kind", ["discrete_gaussian", "skellam"])
def test_device_shares_of_distributed_noise_sum_to_the_target_variance(kind):
    rng = np.random.default_rng(11)
    devices, total_std = 50, 20.0
    total = sum(dp.device_noise(20_000, total_std, devices, kind, rng) for _ in range(devices))
    assert variance_in_chi2_interval(total, total_std ** 2)


def test_device_noise_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="laplace.*discrete_gaussian, skellam"):
        dp.device_noise(3, 1.0, 2, "laplace", np.random.default_rng(0))


def test_noise_room_covers_the_summed_noise():
    assert dp.noise_room(10.0) == 120
    sample = dp.skellam(100_000, 10.0, np.random.default_rng(0))
    assert np.abs(sample).max() < dp.noise_room(10.0)


TRITS = hnp.arrays(np.int8, st.integers(1, 300), elements=st.integers(-1, 1))


@given(TRITS, TRITS, st.floats(0.01, 2.0), st.floats(0.01, 2.0), st.floats(0.0, 10.0), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_capped_trits_sum_to_a_vector_of_norm_at_most_the_bound(a, b, sa, sb, bound, seed):
    out = dp.cap_trits([a, b], [sa, sb], bound, np.random.default_rng(seed))
    assert dp.trit_norm(out, [sa, sb]) <= bound + 1e-9
    for new, old in zip(out, [a, b]):
        assert np.all((new == old) | (new == 0))  # only zeroed, never flipped
    if dp.trit_norm([a, b], [sa, sb]) <= bound:
        assert all(np.array_equal(x, y) for x, y in zip(out, [a, b]))


def test_the_cap_keeps_as_many_trits_as_fit_chosen_uniformly():
    trits = [np.ones(100, np.int8), -np.ones(60, np.int8)]
    kept = np.zeros(160)
    for seed in range(400):
        out = dp.cap_trits(trits, [0.5, 0.5], 4.0, np.random.default_rng(seed))  # (4 / 0.5)^2 = 64 trits fit
        assert np.count_nonzero(out[0]) + np.count_nonzero(out[1]) == 64
        kept += np.concatenate(out) != 0
    rate = kept / 400  # each trit survives with probability 64/160 = 0.4
    assert abs(rate.mean() - 0.4) < 1e-9 and np.abs(rate - 0.4).max() < 0.12


def test_the_trit_norm_is_scale_times_root_of_the_nonzero_count():
    trits = [np.array([1, -1, 0, 1], np.int8), np.array([0, 0, -1], np.int8)]
    assert dp.trit_norm(trits, [0.5, 2.0]) == pytest.approx(math.sqrt(3 * 0.25 + 4.0))


def test_secure_noise_gives_each_tensor_the_float_std_z_clip_once_scaled():
    scales = [0.01, 0.2]
    stds = dp.integer_noise_stds(1.5, 0.8, scales)
    np.testing.assert_allclose(stds, [120.0, 6.0])
    shares = dp.noise_shares(40, 0.6)
    assert shares == 24
    rng = np.random.default_rng(5)
    total = sum(dp.secure_noise([30_000, 20_000], stds, shares, "skellam", rng) for _ in range(shares))
    assert total.dtype == np.int64 and total.size == 50_000
    assert variance_in_chi2_interval(total[:30_000] * scales[0], (1.5 * 0.8) ** 2)
    assert variance_in_chi2_interval(total[30_000:] * scales[1], (1.5 * 0.8) ** 2)
