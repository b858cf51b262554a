"""Secure aggregation through the round engine, in process: the model moves by exactly the unmasked mean of
the survivors' weighted trits, with dropouts at every phase; below the threshold the round fails cleanly; the
driver's recorded view holds masked vectors only."""
from __future__ import annotations

import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.engine.devices import DeviceUpdate
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import Exchange, InProcessFleet
from fedray.privacy import packing, quantize
from fedray.privacy.secagg import MaskedInput
from fedray.strategies.base import server_step

SECURE = ["data.synthetic.n_users=40", "data.synthetic.n_items=200", "data.eval_negatives=20", "model.dim=8",
          "train.participants=10", "train.eval_every=100", "runtime.devices_per_actor=15",
          "privacy.secure_aggregation=true", "compression.mode=dense", "privacy.weight_levels=3",
          "strategy.server_lr=10"]


class SpyFleet(InProcessFleet):
    """The in-process fleet, recording each participant's integer input, and dropping chosen devices at a phase
    (their replies are lost, as when a host dies)."""

    drop: dict[str, set[int]] = {}

    def start(self, plans):
        self.inputs: dict[int, np.ndarray] = {}
        return super().start(plans)

    def exchange(self, phase, by_host, timeout_s):
        if phase == "share":  # the devices' plain inputs, before any masking (a test's view, not the driver's)
            for host, messages in by_host.items():
                for d in messages:
                    self.inputs[d] = self.hosts[host].secure[d].values.copy()
        gone = self.drop.get(phase, set())
        kept = {h: {d: m for d, m in msgs.items() if d not in gone} for h, msgs in by_host.items()}
        out = super().exchange(phase, kept, timeout_s)
        return Exchange(out.replies, out.crashed, sum(len(m) for m in by_host.values()) - len(out.replies))


def build(tmp_path, overrides=(), drop=None):
    SpyFleet.drop = drop or {}
    e = RoundEngine(to_plain(load_config(None, [*SECURE, *overrides])), str(tmp_path / "run"), SpyFleet)
    e.setup()
    e.secure_view = []
    return e


def expected_params(e: RoundEngine, before: dict, survivors: list[int]) -> dict:
    g = e.groups[0]
    total = sum(e.fleet.inputs[d] for d in survivors)
    mean = quantize.mean_update(total, int(e.secure_weight[survivors].sum()), e._scales(g), [v.shape for v in before.values()])
    return server_step(before, dict(zip(before, mean)), g.strategy.server_lr)


def survivors_of(e: RoundEngine) -> list[int]:
    return sorted(m.device for m in e.secure_view if isinstance(m, MaskedInput))


@pytest.mark.parametrize("phase", ["share", "mask", "unmask"])
def test_the_model_moves_by_exactly_the_survivors_mean_with_dropouts_at_each_phase(tmp_path, phase):
    e = build(tmp_path)
    e.run_round()  # round 0, nobody drops
    first = e.records[-1]
    assert first.applied and first.participants == 10
    selected = sorted(e.fleet.inputs)
    assert len(set(e.secure_weight[selected])) > 1  # unequal integer weights are in play
    e.fleet.inputs = {}
    e.secure_view = []
    before = {k: v.copy() for k, v in e.groups[0].params.items()}
    rec = e.run_round()[0]
    gone = set(sorted(e.fleet.inputs)[:3])  # decided after the fact: rerun the same round with drops
    e2 = build(tmp_path / "again")
    e2.run_round()
    SpyFleet.drop = {phase: gone}  # only in round 1
    e2.secure_view = []
    before2 = {k: v.copy() for k, v in e2.groups[0].params.items()}
    assert all(np.array_equal(before2[k], before[k]) for k in before)  # same seed, same round 0
    rec2 = e2.run_round()[0]
    survivors = survivors_of(e2)
    assert rec2.applied
    assert len(survivors) == (10 if phase == "unmask" else 7) == rec2.participants
    want = expected_params(e2, before2, survivors)
    for k in want:
        assert want[k].tobytes() == e2.groups[0].params[k].tobytes(), k
    assert rec2.failures == 3 and rec.failures == 0
    assert any(not np.array_equal(before2[k], e2.groups[0].params[k]) for k in before2)


def test_below_the_threshold_the_round_fails_is_retried_and_the_model_stays(tmp_path):
    e = build(tmp_path, ["privacy.threshold=0.8", "train.max_round_retries=1"], drop={"mask": set(range(40))})
    before = {k: v.copy() for k, v in e.groups[0].params.items()}
    rec = e.run_round()[0]
    assert not rec.applied and rec.retries == 1 and rec.participants == 0
    assert "secagg_aborted" in rec.reject_reasons
    assert all(np.array_equal(before[k], e.groups[0].params[k]) for k in before)
    assert any("secure aggregation aborted: too few masked inputs arrived" in line for line in e.log)


def test_stragglers_past_the_deadline_are_dropped_before_they_share(tmp_path):
    e = build(tmp_path, ["train.over_select=1.5", "train.participants=8"])
    rec = e.run_round()[0]
    assert rec.selected == 12 and rec.participants == 8 and rec.stragglers == 4
    adverts = [m for m in e.secure_view if isinstance(m, DeviceUpdate)]
    assert len(adverts) == 12 and len(survivors_of(e)) == 8


def test_the_drivers_view_is_uniform_in_z_m_and_holds_no_update_or_trits(tmp_path):
    e = build(tmp_path, ["privacy.weight_levels=1", "train.participants=12"])
    e.run_round()
    length = sum(v.size for v in e.groups[0].params.values())
    bits = quantize.modulus_bits(12)
    masked = [m for m in e.secure_view if isinstance(m, MaskedInput)]
    assert len(masked) == 12
    pooled = np.concatenate([packing.unpack(m.payload, length, bits).astype(np.int64) for m in masked])
    counts = np.bincount(pooled, minlength=1 << bits)
    dof = (1 << bits) - 1
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
    assert chi2 < dof + 6 * np.sqrt(2 * dof), chi2
    plain = {d: v for d, v in e.fleet.inputs.items()}
    assert any(np.count_nonzero(v) for v in plain.values())
    forbidden = []
    for v in plain.values():  # the trits in every plausible encoding
        forbidden += [v.tobytes(), v.astype(np.int8).tobytes(), (v % (1 << bits)).astype(np.uint64).tobytes(),
                      packing.pack((v % (1 << bits)).astype(np.uint64), bits)]
    for m in masked:
        values = packing.unpack(m.payload, length, bits)
        assert all(not np.array_equal(values, (v % (1 << bits)).astype(np.uint64)) for v in plain.values())
    for msg in e.secure_view:
        items = msg if isinstance(msg, list) else [msg]
        for item in items:
            for part in vars(item).values():
                if isinstance(part, bytes) and len(part) >= 8:
                    assert all(part != f and (len(f) < 16 or f not in part) for f in forbidden)
    assert all(m.payload == b"" for m in e.secure_view if isinstance(m, DeviceUpdate))


def test_a_device_that_lost_its_round_state_drops_out_and_the_round_goes_on(tmp_path):
    e = build(tmp_path)
    original = e.fleet.exchange

    def forget(phase, by_host, timeout_s):
        if phase == "mask":
            host = next(iter(by_host))
            victim = next(iter(by_host[host]))
            e.fleet.hosts[host].secure.pop(victim)  # as after a host restart
        return original(phase, by_host, timeout_s)

    e.fleet.exchange = forget
    rec = e.run_round()[0]
    assert rec.applied and rec.participants == 9 and rec.failures == 1
    assert any("dropped out of secure aggregation (mask)" in line for line in e.log)
