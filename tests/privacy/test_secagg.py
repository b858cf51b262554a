"""The SecAgg+ state machines end to end, in process: exact sums under dropouts at every phase, clean aborts
below the threshold, a dishonest driver refused, and what the driver sees."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from fedray.privacy import keys, packing
from fedray.privacy.quantize import modulus_bits
from fedray.privacy.secagg import (ProtocolViolation, SecAggAborted, SecAggClient, SecAggServer, ShareDelivery,
                                   UnmaskRequest)

PHASES = ("share", "mask", "unmask")


@dataclass
class Round:
    """One protocol round over in-process clients; `drop` maps a phase to the devices that vanish before it."""

    n: int = 12
    length: int = 300
    threshold: float = 0.6
    degree: int | None = None
    weight: int = 3
    drop: dict[str, set[int]] = field(default_factory=dict)
    view: list = field(default_factory=list)  # every message the driver receives

    def __post_init__(self):
        rng = np.random.default_rng(7)
        self.inputs = {d: self.weight * rng.integers(-1, 2, self.length) for d in range(100, 100 + self.n)}
        self.bits = modulus_bits(self.weight * self.n)
        self.server = SecAggServer(5, self.length, self.bits, self.threshold, self.degree)
        self.clients = {d: SecAggClient(d, 5, v) for d, v in self.inputs.items()}

    def alive(self, phase: str, devices) -> list[int]:
        gone = set().union(*(self.drop.get(p, set()) for p in PHASES[: PHASES.index(phase) + 1]))
        return [d for d in devices if d not in gone]

    def run(self) -> np.ndarray:
        adverts = [c.advertise() for c in self.clients.values()]
        self.view += adverts
        requests = self.server.route_keys(adverts, np.random.default_rng(1))
        shares = {d: self.clients[d].share(requests[d]) for d in self.alive("share", requests)}
        self.view += [s for v in shares.values() for s in v]
        deliveries = self.server.route_shares(shares)
        masked = [self.clients[d].mask(deliveries[d]) for d in self.alive("mask", deliveries)]
        self.view += masked
        asks = self.server.route_masked(masked)
        responses = [self.clients[d].unmask(asks[d]) for d in self.alive("unmask", asks)]
        self.view += responses
        return self.server.finish(responses)

    def expected(self) -> np.ndarray:
        return sum(self.inputs[d] for d in self.server.survivors())


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("dropped", [0, 1, 3, "n-t"])
def test_the_unmasked_sum_is_exact_with_dropouts_at_each_phase(phase, dropped):
    r = Round()
    count = r.n - int(np.ceil(r.threshold * r.n)) if dropped == "n-t" else dropped
    r.drop = {phase: set(range(100, 100 + count))}
    total = r.run()
    survivors = r.server.survivors()
    assert len(survivors) == (r.n if phase == "unmask" else r.n - count)
    assert total.dtype == np.int64
    np.testing.assert_array_equal(total, r.expected())


def test_sparse_neighbour_graph_with_dropouts_at_every_phase():
    r = Round(n=40, degree=8, threshold=0.55, drop={"share": {100}, "mask": {101, 102}, "unmask": {103}})
    np.testing.assert_array_equal(r.run(), r.expected())
    assert all(len(v) == 8 for v in r.server.graph.values())


def test_wide_moduli_and_negative_sums_are_exact():
    r = Round(n=4, weight=1 << 35, drop={"mask": {101}})
    assert r.bits > 32
    np.testing.assert_array_equal(r.run(), r.expected())


@pytest.mark.parametrize("phase,match", [("share", "shared their keys"), ("mask", "masked inputs arrived"),
                                         ("unmask", "shares of device")])
def test_below_the_threshold_the_round_aborts_with_a_clear_error(phase, match):
    r = Round(n=10, threshold=0.7)
    r.drop = {phase: set(range(100, 104))}  # 4 of 10 gone, 7 needed
    with pytest.raises(SecAggAborted, match=f"round 5: .*{match}.*privacy.threshold=0.7"):
        r.run()


def _to_unmask(r: Round) -> dict[int, UnmaskRequest]:
    adverts = [c.advertise() for c in r.clients.values()]
    req = r.server.route_keys(adverts, np.random.default_rng(1))
    deliveries = r.server.route_shares({d: r.clients[d].share(req[d]) for d in req})
    masked = [r.clients[d].mask(deliveries[d]) for d in deliveries if d != 100]
    return r.server.route_masked(masked)


def test_a_dishonest_driver_asking_for_both_shares_of_a_device_is_refused():
    r = Round(n=6, threshold=0.6)
    asks = _to_unmask(r)
    honest = asks[101]
    assert 100 in honest.dropped
    first = r.clients[101].unmask(honest)
    assert 100 in first.key_shares and 100 not in first.self_mask_shares
    # now claim 100 survived after all, to get its self-mask share as well
    lie = UnmaskRequest(5, tuple(sorted(honest.survivors + (100,))), ())
    with pytest.raises(ProtocolViolation, match="contradicts the first"):
        r.clients[101].unmask(lie)
    assert r.clients[101].unmask(honest) == first  # a repeated identical request is answered the same
    both = UnmaskRequest(5, honest.survivors + (100,), honest.dropped)
    with pytest.raises(ProtocolViolation, match="both surviving and dropped"):
        r.clients[102].unmask(both)


def test_a_device_refuses_when_almost_every_neighbour_is_reported_dropped():
    r = Round(n=6, threshold=0.6)
    asks = _to_unmask(r)
    everyone = tuple(sorted(set(asks[101].survivors) | set(asks[101].dropped)))
    with pytest.raises(ProtocolViolation, match="surviving neighbours reported"):
        r.clients[101].unmask(UnmaskRequest(5, (), everyone))


def test_the_driver_never_stores_both_kinds_of_share_of_one_device():
    r = Round(n=6, threshold=0.6, drop={"mask": {100}})
    r.run()
    assert 100 in r.server.key_shares and 100 not in r.server.self_mask_shares
    assert not set(r.server.key_shares) & set(r.server.self_mask_shares)
    with pytest.raises(ProtocolViolation, match="both kinds"):
        r.server._store(r.server.self_mask_shares, r.server.key_shares, 100, 101, np.zeros(11, np.int64))


def test_phases_out_of_order_and_tampered_or_misrouted_shares_are_refused():
    r = Round(n=4)
    c = r.clients[100]
    with pytest.raises(ProtocolViolation, match="mask requested in phase advertise"):
        c.mask(ShareDelivery(5, ()))
    adverts = [x.advertise() for x in r.clients.values()]
    req = r.server.route_keys(adverts, np.random.default_rng(1))
    shares = {d: r.clients[d].share(req[d]) for d in req}
    to_100 = [s for v in shares.values() for s in v if s.receiver == 100]
    bad = replace(to_100[0], ciphertext=to_100[0].ciphertext[:-1] + bytes([to_100[0].ciphertext[-1] ^ 1]))
    with pytest.raises(keys.ChannelError):
        c.mask(ShareDelivery(5, (bad, *to_100[1:])))
    to_101 = [s for v in shares.values() for s in v if s.receiver == 101]
    with pytest.raises(ProtocolViolation, match="not for it"):
        r.clients[102].mask(ShareDelivery(5, tuple(to_101)))


def test_masked_inputs_look_uniform_in_z_m_and_no_message_holds_an_input():
    r = Round(n=8, length=4000, weight=1, drop={"mask": {100}})
    r.run()
    masked = [m for m in r.view if hasattr(m, "payload")]
    assert len(masked) == 7
    M = 1 << r.bits
    for m in masked:
        values = packing.unpack(m.payload, r.length, r.bits).astype(np.int64)
        counts = np.bincount(values, minlength=M)
        chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
        assert chi2 < M - 1 + 6 * np.sqrt(2 * (M - 1)), chi2  # the inputs are nearly all in {-1, 0, 1}
        plain = r.inputs[m.device]
        assert not np.array_equal(values, plain % M)
        assert np.mean(values == plain % M) < 2.5 / M
    blobs = [bytes(np.asarray(v, np.int64).tobytes()) for v in r.inputs.values()]
    for msg in r.view:
        for part in vars(msg).values():
            if isinstance(part, (bytes, np.ndarray)):
                raw = part if isinstance(part, bytes) else part.tobytes()
                assert all(b not in raw for b in blobs)


def test_keys_and_masks_are_fresh_each_round_even_for_the_same_inputs():
    a, b = Round(n=3, length=50), Round(n=3, length=50)
    a.run(), b.run()
    ma = [m.payload for m in a.view if hasattr(m, "payload")]
    mb = [m.payload for m in b.view if hasattr(m, "payload")]
    assert all(x != y for x, y in zip(ma, mb))
    assert {m.mask_key for m in a.view if hasattr(m, "mask_key")}.isdisjoint({m.mask_key for m in b.view if hasattr(m, "mask_key")})


def test_self_masks_hide_a_survivor_even_from_a_driver_that_learns_its_pairwise_keys():
    """What a late 'dropped' claim would give the driver (every pairwise mask of a survivor) still leaves the
    survivor's input under its self mask; and self seeds differ between devices and rounds."""
    from fedray.privacy import masks
    from fedray.privacy.secagg import pair_sign

    r = Round(n=5, length=2000, weight=1)
    r.run()
    M = 1 << r.bits
    word = masks.word_type(r.bits)
    for m in (m for m in r.view if hasattr(m, "payload")):
        c = r.clients[m.device]
        y = packing.unpack(m.payload, r.length, r.bits).astype(word)
        for other in c.held:
            pairwise = masks.expand(keys.agree(c.mask_pair, c.peers[other].mask_key, keys.MASK_INFO), r.length, r.bits)
            y = y - pairwise if pair_sign(c.device, other) > 0 else y + pairwise
        y &= word(M - 1)
        plain = (r.inputs[m.device] % M).astype(word)
        assert np.mean(y == plain) < 2.5 / M  # still masked
        unmasked = (y - masks.expand(c.self_seed, r.length, r.bits)) & word(M - 1)
        assert np.array_equal(unmasked, plain)
    again = Round(n=5, length=10)
    assert len({c.self_seed for c in r.clients.values()} | {c.self_seed for c in again.clients.values()}) == 10
