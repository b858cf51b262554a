import numpy as np
import pytest
import tenseal as ts

from fedray.vertical import ckks


@pytest.fixture(scope="module")
def keys():
    params = ckks.CKKSParams()
    secret = ckks.secret_context(params)
    pub_bytes = ckks.public_context_bytes(secret)
    return params, secret, pub_bytes


def test_public_context_cannot_decrypt(keys):
    params, secret, pub_bytes = keys
    pub = ckks.load_context(pub_bytes)
    assert secret.is_private() and secret.has_secret_key()
    assert not pub.is_private() and not pub.has_secret_key()
    with pytest.raises(ValueError):
        pub.secret_key()
    enc = ckks.encrypt_chunks(pub, np.arange(10.0), params.slots)
    with pytest.raises(ValueError):
        ts.ckks_vector_from(pub, enc[0]).decrypt()
    # the secret context can; and the public bytes are smaller than a secret serialization
    assert np.allclose(ckks.decrypt_chunks(secret, enc, 10), np.arange(10.0), atol=1e-6)
    assert len(secret.serialize(save_secret_key=True)) != len(pub_bytes)
    # no Galois keys travel (the protocol needs no rotations)
    assert not pub.has_galois_keys()


@pytest.mark.parametrize("m,f", [(569, 20), (100, 3), (3000, 4), (9000, 3)])
def test_masked_gradient_equals_plain(keys, m, f):
    params, secret, pub_bytes = keys
    pub = ckks.load_context(pub_bytes)
    rng = np.random.default_rng(m)
    X = rng.normal(size=(m, f)) * 3
    d = rng.uniform(-1, 1, m)
    layout = ckks.SlotLayout(m, params.slots)
    enc_d = [ts.ckks_vector(secret, v).serialize() for v in layout.residual_plain(d)]
    masked, mask_sums = ckks.masked_gradient(pub, enc_d, X, layout, params.mask_bits,
                                             2.0 ** (2 * params.global_scale_bits))
    assert len(masked) == layout.outputs(f)
    sums = ckks.unmask_sums(secret, masked, layout)
    grad = sums[:f] - mask_sums
    assert np.allclose(grad, X.T @ d, atol=1e-3)
    # what the business party decrypts is dominated by the mask, not the products
    slots = np.asarray(ts.ckks_vector_from(secret, masked[0]).decrypt())
    assert np.median(np.abs(slots)) > 2.0 ** (params.mask_bits - 3)
    assert np.all(np.abs(sums[:f] - X.T @ d) > 1e3)


def test_layout_choices():
    assert ckks.SlotLayout(569, 4096).pack == 7 and ckks.SlotLayout(569, 4096).chunks == 1
    assert ckks.SlotLayout(2049, 4096).pack == 1 and ckks.SlotLayout(2049, 4096).chunks == 1
    big = ckks.SlotLayout(100_000, 4096)
    assert (big.pack, big.chunks, big.outputs(300)) == (1, 25, 300)
    assert ckks.SlotLayout(569, 4096).outputs(20) == 3


def test_driver_sum(keys):
    params, secret, pub_bytes = keys
    pub = ckks.load_context(pub_bytes)
    a, b = np.arange(5000.0) / 100, np.ones(5000)
    s = ckks.add_ciphertexts(pub, [ckks.encrypt_chunks(pub, a, params.slots),
                                   ckks.encrypt_chunks(pub, b, params.slots)])
    assert len(s) == 2
    assert np.allclose(ckks.decrypt_chunks(secret, s, 5000), a + b, atol=1e-5)


def test_random_mask_range():
    r = ckks.random_mask(100_000, 30)
    assert r.min() >= -(2.0 ** 30) and r.max() < 2.0 ** 30
    assert r.std() > 2.0 ** 29  # uniform: std = 2^30 / sqrt(3)


@pytest.mark.parametrize("m, f, bins", [(70, 3, 8), (900, 2, 16), (5000, 1, 4)])
def test_masked_histograms_decrypt_to_bin_sums_and_nothing_finer(keys, m, f, bins):
    """Segment sums are the exact bin sums (to CKKS precision); single slots stay masked. Catches a wrong
    one-hot column, a block misplaced in the tiling, or masks that do not cancel per segment."""
    from fedray.vertical.boost import histograms

    params, secret, pub_bytes = keys
    pub = ckks.load_context(pub_bytes)
    rng = np.random.default_rng(m)
    codes = rng.integers(0, bins + 1, (m, f)).astype(np.int16)
    g = rng.uniform(-1, 1, m)
    layout = ckks.BlockLayout.choose(m, params.slots, f * (bins + 1))
    enc = [ts.ckks_vector(secret, v).serialize() for v in layout.residual_plain(g)]
    out = ckks.masked_histograms(pub, enc, codes, bins, layout, params.mask_bits,
                                 2.0 ** (2 * params.global_scale_bits))
    assert len(out) == layout.outputs(f * (bins + 1)) and len(enc) == layout.blocks
    sums = ckks.unmask_sums(secret, out, layout, params.plausible_bound)[: f * (bins + 1)].reshape(f, bins + 1)
    G, _ = histograms(codes, g, g, bins)
    assert np.abs(sums - G).max() < 1e-3
    slots = np.asarray(ts.ckks_vector_from(secret, out[0]).decrypt(), dtype=float)
    assert np.median(np.abs(slots[: layout.segment])) > 2.0 ** 20  # each slot is masked


def test_zero_sum_mask_cancels_per_segment_exactly():
    layout = ckks.BlockLayout(m=300, slots=4096, segment=256)
    mask = ckks.zero_sum_mask(layout, 30)
    assert np.all(layout.segment_sums(mask) == 0.0) and np.all(mask[layout.pack * layout.segment:] == 0.0)
    assert np.abs(mask).max() < 2.0 ** 31 and np.abs(mask).min() >= 0 and np.std(mask) > 2.0 ** 28


def test_masks_are_fresh_across_outputs_and_steps(keys):
    """Decrypting with the secret key: every output, every step carries its own mask, so the business party
    cannot difference two outputs (or two steps) to learn a provider's products."""
    params, secret, pub_bytes = keys
    pub = ckks.load_context(pub_bytes)
    rng = np.random.default_rng(7)
    X, d = rng.normal(size=(3000, 4)), rng.uniform(-1, 1, 3000)
    layout = ckks.SlotLayout(3000, params.slots)
    enc_d = [ts.ckks_vector(secret, v).serialize() for v in layout.residual_plain(d)]
    masks = []
    for _ in range(2):  # two steps on the same batch
        masked, _ = ckks.masked_gradient(pub, enc_d, X, layout, params.mask_bits, 2.0 ** (2 * params.global_scale_bits))
        for o, ct in enumerate(masked):
            true = sum(r * p for r, p in zip(layout.residual_plain(d), layout.feature_plain(X, o)))
            masks.append(np.asarray(ts.ckks_vector_from(secret, ct).decrypt()) - true)
    assert len(masks) == 2 * layout.outputs(4) >= 4
    for i in range(len(masks)):
        for j in range(i):
            assert np.median(np.abs(masks[i] - masks[j])) > 2.0 ** (params.mask_bits - 3), (i, j)
    spread = np.concatenate(masks) / 2.0 ** params.mask_bits  # uniform in [-1, 1): mean 0, variance 1/3
    assert abs(spread.mean()) < 0.01 and abs(spread.var() - 1 / 3) < 0.01
