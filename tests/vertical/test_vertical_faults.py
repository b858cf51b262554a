"""Ciphertexts of the wrong context are rejected with a clear error; party state round-trips by
feature code, so a run continued from saved state follows an uninterrupted one (no Ray)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedray.data.vertical import read_party
from fedray.vertical import ckks
from fedray.vertical.ckks import CKKSError, CKKSParams
from fedray.vertical.config import VerticalConfig
from fedray.vertical.protocol import BusinessCore, ProviderCore, Settings, run_local

P = CKKSParams()


@pytest.fixture(scope="module")
def ours():
    secret = ckks.secret_context(P)
    return secret, ckks.load_context(ckks.public_context_bytes(secret))


def _foreign(params: CKKSParams, values=np.arange(10.0)) -> bytes:
    other = ckks.secret_context(params)
    return ckks.encrypt_chunks(other, values, params.slots)[0]


def test_honest_ciphertext_passes(ours):
    secret, pub = ours
    ct = ckks.encrypt_chunks(pub, np.arange(10.0), P.slots)
    assert np.allclose(ckks.decrypt_chunks(secret, ct, 10, P.plausible_bound), np.arange(10.0), atol=1e-6)
    assert ckks.load_vector(pub, ct[0]).size() == P.slots


def test_other_poly_modulus_degree_is_rejected(ours):
    secret, pub = ours
    ct = _foreign(CKKSParams(4096, (40, 20, 40), 20, 8))
    with pytest.raises(CKKSError, match=r"driver: .* does not deserialize under this CKKS context .*poly modulus"):
        ckks.load_vector(pub, ct, what="driver: ciphertext")
    with pytest.raises(CKKSError, match="does not deserialize"):
        ckks.decrypt_chunks(secret, [ct], 10)


def test_other_coefficient_modulus_is_rejected(ours):
    _, pub = ours
    ct = _foreign(CKKSParams(8192, (50, 40, 40, 50), 40, 30))
    with pytest.raises(CKKSError, match="does not deserialize .*coefficient modulus"):
        ckks.load_vector(pub, ct)


def test_other_scale_is_rejected(ours):
    secret, pub = ours
    ct = _foreign(CKKSParams(8192, (60, 40, 40, 60), 30, 30))  # same N and primes, scale 2^30
    with pytest.raises(CKKSError, match=r"scale 2\^30 but this context expects 2\^40"):
        ckks.load_vector(pub, ct, what="provider0: residual ciphertext")
    # a fresh ciphertext where a masked product (scale 2^80) is expected
    fresh = ckks.encrypt_chunks(pub, np.arange(10.0), P.slots)
    with pytest.raises(CKKSError, match=r"business: masked gradient ciphertext \[0\]: .*scale 2\^40 .*expects 2\^80"):
        ckks.unmask_sums(secret, fresh, ckks.SlotLayout(10, P.slots), P.plausible_bound)


def test_same_parameters_other_key_is_rejected_on_decryption(ours):
    secret, _ = ours
    ct = _foreign(P)  # deserializes fine: SEAL cannot tell keys apart
    assert ckks.load_vector(secret, ct).size() == P.slots
    with pytest.raises(CKKSError, match="encrypted under another key"):
        ckks.decrypt_chunks(secret, [ct], 10, P.plausible_bound, "business: summed partial scores")


def test_garbage_and_wrong_types_are_rejected(ours):
    _, pub = ours
    with pytest.raises(CKKSError, match="does not deserialize"):
        ckks.load_vector(pub, b"\x00" * 1000)
    good = ckks.encrypt_chunks(pub, np.arange(10.0), P.slots)[0]
    with pytest.raises(CKKSError, match="does not deserialize"):
        ckks.load_vector(pub, good[: len(good) // 2])  # truncated
    with pytest.raises(CKKSError, match="expected serialized ciphertext bytes"):
        ckks.load_vector(pub, "not bytes")


def test_driver_names_the_party_whose_ciphertext_is_wrong(ours):
    _, pub = ours
    good = ckks.encrypt_chunks(pub, np.arange(10.0), P.slots)
    bad = [_foreign(CKKSParams(4096, (40, 20, 40), 20, 8))]
    with pytest.raises(CKKSError, match=r"driver: ciphertext \[0\] from bank"):
        ckks.add_ciphertexts(pub, [good, bad], ["provider0", "bank"])


def test_parties_reject_foreign_ciphertexts(data_dir):
    """Through the party cores: the business party on decryption, a provider on the residual."""
    s = Settings.from_config(VerticalConfig())
    g = read_party(data_dir / "breast_hetero_guest.csv", label_column="y")
    h = read_party(data_dir / "breast_hetero_host.csv")
    b, p = BusinessCore(g, s), ProviderCore("provider0", h, s)
    run_local(b, [p], s, iterations=1)
    with pytest.raises(CKKSError, match="business: summed partial scores: .*another key"):
        b.forward(None, [_foreign(P, np.zeros(b.n))])
    b.forward(None, p.scores(None))
    b.backward()
    with pytest.raises(CKKSError, match=r"provider0: residual ciphertext \[0\]: .*scale"):
        p.masked_gradient(None, [_foreign(CKKSParams(8192, (60, 40, 40, 60), 30, 30))])


def _cores(data_dir, s, workers=1):
    g = read_party(data_dir / "breast_hetero_guest.csv", label_column="y")
    h = read_party(data_dir / "breast_hetero_host.csv")
    return BusinessCore(g, s), [ProviderCore("provider0", h, s, (k, workers)) for k in range(workers)]


def test_state_round_trips_by_feature_code_and_resume_follows_uninterrupted(data_dir):
    s = replace(Settings.from_config(VerticalConfig()), momentum=0.5, l2=0.01)
    # uninterrupted: 6 iterations
    b0, (p0,) = _cores(data_dir, s)
    run_local(b0, [p0], s, iterations=6)
    # interrupted after 3: save each party's state, rebuild (fresh PSI order, fresh keys), load, 3 more
    b1, (p1,) = _cores(data_dir, s)
    t1, _, hist1 = run_local(b1, [p1], s, iterations=3)
    saved = {"business": b1.export_state(), "provider0": p1.export_state()}
    tstate = t1.state()
    assert tstate["iteration"] == 3
    assert sorted(saved["business"]["code"].to_pylist()) == [-1] + list(range(10))
    assert sorted(saved["provider0"]["code"].to_pylist()) == list(range(10, 30))
    assert saved["business"].column_names == ["code", "weight", "velocity", "second_moment", "steps"]
    # the provider resumes split over 3 workers: each picks its own codes from the party's table
    b2, shards = _cores(data_dir, s, workers=3)
    from fedray.vertical.protocol import LocalTransport, Trainer

    parties = {"business": b2, **{f"provider0:{k}": c for k, c in enumerate(shards)}}
    t2 = Trainer(LocalTransport(parties), {"provider0": list(parties)[1:]}, s)
    t2.setup()
    assert b2.import_state(saved["business"]) == 11
    assert sum(c.import_state(saved["provider0"]) for c in shards) == 20
    assert np.array_equal(b2.opt.w, b1.opt.w) and np.array_equal(b2.opt.v, b1.opt.v)
    assert np.array_equal(np.concatenate([c.opt.w for c in shards]), p1.opt.w)
    t2.load_state(tstate)
    for _ in range(3):
        t2.iteration()
    assert t2.done == 6
    got = np.r_[b2.opt.w, np.concatenate([c.opt.w for c in shards])]
    want = np.r_[b0.opt.w, p0.opt.w]
    assert np.allclose(got, want, atol=1e-5), np.abs(got - want).max()


def test_import_refuses_state_without_the_partys_codes(data_dir):
    s = Settings.from_config(VerticalConfig())
    b, (p,) = _cores(data_dir, s)
    run_local(b, [p], s, iterations=1)
    with pytest.raises(ValueError, match=r"provider0: checkpoint state has no weights for feature codes \[10"):
        p.import_state(b.export_state())
