import numpy as np
import pytest

from fedray.privacy import graph, masks, quantize


def test_small_rounds_use_the_complete_graph_and_large_ones_a_symmetric_sparse_one():
    rng = np.random.default_rng(0)
    small = graph.neighbours(np.arange(5), None, rng)
    assert all(len(v) == 4 for v in small.values())
    ids = np.arange(0, 3000, 3)
    big = graph.neighbours(ids, None, rng)
    degree = graph.default_degree(len(ids))
    assert degree < 40
    assert all(len(v) == degree for v in big.values())
    assert all(d in big[o] for d, v in big.items() for o in v)  # symmetric
    assert all(d not in v for d, v in big.items())
    odd = graph.neighbours(np.arange(10), 3, rng)
    assert all(len(v) == 3 for v in odd.values())


def test_share_threshold_is_a_ceiling_of_the_fraction():
    assert graph.share_threshold(0.51, 10) == 6
    assert graph.share_threshold(1.0, 7) == 7
    assert graph.share_threshold(0.7, 10) == 7


def test_masks_come_from_the_seed_and_cover_z_m_uniformly():
    a = masks.expand(b"k" * 32, 200_000, 6)
    assert np.array_equal(a, masks.expand(b"k" * 32, 200_000, 6))
    assert not np.array_equal(a, masks.expand(b"j" * 32, 200_000, 6))
    counts = np.bincount(a.astype(np.int64), minlength=64)
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
    assert chi2 < 120  # 63 degrees of freedom: p ~ 1e-5
    assert masks.expand(b"k" * 32, 10, 40).max() < 1 << 40


def test_ternarize_is_unbiased_against_the_common_scale_and_clips_beyond_it():
    x = [np.array([0.05, -0.02, 0.0, 0.3], np.float32)]
    scales = np.array([0.1], np.float32)
    rng = np.random.default_rng(1)
    draws = np.stack([quantize.ternarize(x, scales, rng) for _ in range(8000)])
    assert set(np.unique(draws)) <= {-1, 0, 1}
    np.testing.assert_allclose(draws.mean(0) * 0.1, [0.05, -0.02, 0.0, 0.1], atol=5e-3)


def test_scales_clip_norm_weights_and_bits():
    s = quantize.tensor_scales([1, 100, 10_000], clip=2.0, coordinate_clip=3.0)
    np.testing.assert_allclose(s, [2.0, 0.6, 0.06], rtol=1e-6)
    clipped, was = quantize.clip_l2([np.full(4, 3.0, np.float32)], 2.0)
    assert was and np.linalg.norm(clipped[0]) == pytest.approx(2.0, rel=1e-6)
    same, was = quantize.clip_l2([np.full(4, 0.1, np.float32)], 2.0)
    assert not was and np.array_equal(same[0], np.full(4, 0.1, np.float32))
    assert quantize.integer_weights(np.array([10, 40, 100, 1]), 4).tolist() == [1, 2, 4, 1]
    assert quantize.integer_weights(np.array([10, 40]), 1).tolist() == [1, 1]
    assert quantize.modulus_bits(64) == 8  # sums in [-64, 64]: 129 values
    assert quantize.modulus_bits(63) == 7
    assert quantize.modulus_bits(64, noise_bound=100) == 9
    assert quantize.centred(np.array([0, 1, 127, 128, 255], np.uint64), 8).tolist() == [0, 1, 127, -128, -1]


def test_mean_update_undoes_the_weights_and_scales():
    total = np.array([4, -2, 6], np.int64)
    out = quantize.mean_update(total, 2, np.array([0.5, 0.25], np.float32), [(1,), (2,)])
    np.testing.assert_allclose(np.concatenate(out), [1.0, -0.25, 0.75])
