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


def test_seal_bytes_are_tenseals_own_serialization(keys):
    """The hot loop's own byte output (SEAL's save wrapped in TenSEAL's vector framing) is byte-identical to
    TenSEAL's ``serialize``. Catches a wrong field tag, length or scale in the framing."""
    params, secret, pub_bytes = keys
    pub = ckks.load_context(pub_bytes)
    vec = ts.ckks_vector(pub, np.linspace(-1, 1, params.slots))
    ops = ckks.seal_ops(pub)
    assert ops.to_bytes(ckks.seal_ciphertext(vec), pub.global_scale) == vec.serialize()
    assert ckks.seal_ops(pub) is ops  # made once per context


@pytest.mark.parametrize("m, f, segment", [(9000, 5, 1024), (20_000, 7, 2048), (5000, 9, 512), (700, 3, 256)])
def test_blocked_layout_gradient_equals_plain(keys, m, f, segment):
    """Rows in blocks of ``segment`` (last one partial), several features per output: the unmasked sums are
    X^T d. Catches a block misplaced or not zero-padded, features out of order within an output, or a
    mask sum taken over the wrong segment."""
    params, secret, pub_bytes = keys
    pub = ckks.load_context(pub_bytes)
    rng = np.random.default_rng(m + f)
    X, d = rng.normal(size=(m, f)) * 3, rng.uniform(-1, 1, m)
    layout = ckks.SlotLayout(m, params.slots, segment)
    assert layout.blocks == -(-m // segment) and layout.pack == params.slots // segment
    enc_d = [ts.ckks_vector(secret, v).serialize() for v in layout.residual_plain(d)]
    masked, mask_sums = ckks.masked_gradient(pub, enc_d, X, layout, params.mask_bits,
                                             2.0 ** (2 * params.global_scale_bits))
    assert len(masked) == layout.outputs(f) == -(-f // layout.pack)
    sums = ckks.unmask_sums(secret, masked, layout, params.plausible_bound)
    assert np.allclose(sums[:f] - mask_sums, X.T @ d, atol=1e-3)
    assert np.all(np.abs(sums[:f] - X.T @ d) > 1e3)  # the business party's sums are masked


def test_layout_choice_balances_encryptions_and_outputs():
    """One block when the batch fits a ciphertext; else the power of two nearest sqrt(m * slots / features)."""
    assert ckks.SlotLayout.choose(80_000, 4096, 300).segment == 1024
    assert ckks.SlotLayout.choose(24_000, 4096, 10).segment == 4096  # few features: one feature per output
    assert ckks.SlotLayout.choose(455, 4096, 20) == ckks.SlotLayout(455, 4096, 455)
    assert ckks.SlotLayout(100_000, 4096) == ckks.SlotLayout(100_000, 4096, 4096)
    for bad in (-1, 4097):
        with pytest.raises(ValueError, match="segment"):
            ckks.SlotLayout(5000, 4096, bad)


def test_plain_cache_reuses_encodings_within_its_budget(keys):
    """A second step with the cache gives the same gradient with fresh masks and encodes nothing new; another
    layout of the same columns gets its own entries; a budget below one output's plaintexts keeps nothing.
    Catches a cache keyed without the layout (stale multipliers) or one that ignores its budget."""
    params, secret, pub_bytes = keys
    pub = ckks.load_context(pub_bytes)
    rng = np.random.default_rng(11)
    m, f = 9000, 6
    X, scale = rng.normal(size=(m, f)), 2.0 ** (2 * params.global_scale_bits)
    cache = ckks.PlainCache(1 << 30)
    for segment in (1024, 2048, 1024):
        layout = ckks.SlotLayout(m, params.slots, segment)
        d = rng.uniform(-1, 1, m)
        enc_d = [ts.ckks_vector(secret, v).serialize() for v in layout.residual_plain(d)]
        before = cache.used
        masked, mask_sums = ckks.masked_gradient(pub, enc_d, X, layout, params.mask_bits, scale, cache=cache)
        sums = ckks.unmask_sums(secret, masked, layout)
        assert np.allclose(sums[:f] - mask_sums, X.T @ d, atol=1e-3)
        if segment == 2048:
            assert cache.used > before  # a new layout: new entries
    assert cache.used == sum(sum(p.coeff_count() * 8 for p in v if p is not None) for v in cache._plains.values())
    per_output = cache.used // len(cache._plains)
    small = ckks.PlainCache(per_output - 1)
    layout = ckks.SlotLayout(m, params.slots, 1024)
    enc_d = [ts.ckks_vector(secret, v).serialize() for v in layout.residual_plain(np.ones(m))]
    ckks.masked_gradient(pub, enc_d, X, layout, params.mask_bits, scale, cache=small)
    assert small.used == 0 and not small._plains
