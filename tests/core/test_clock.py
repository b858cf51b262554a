import json

import numpy as np
import pytest

from fedray.core.clock import SimClock, accept_by_deadline, device_round_time, mf_flops, round_time


def test_device_round_time_hand_computed():
    # 2 GFLOP at 10 GFLOP/s = 0.2 s; 1 MB down at 8 Mbps = 1 s; 0.5 MB up at 4 Mbps = 1 s; +0.05
    t = device_round_time(2e9, np.array([10.0]), 5e5, 1e6, np.array([4.0]), np.array([8.0]))
    assert t.shape == (1,)
    assert t[0] == pytest.approx(2.25, abs=1e-12)


def test_device_round_time_broadcasts_per_device():
    gflops = np.array([200.0, 40.0, 5.0])
    up = np.array([100.0, 20.0, 5.0])
    down = np.array([200.0, 50.0, 20.0])
    t = device_round_time(1e10, gflops, 1e6, 4e6, up, down, latency_s=np.array([0.02, 0.04, 0.08]))
    expected = [
        0.05 + 32 / 200 + 8 / 100 + 0.02,
        0.25 + 32 / 50 + 8 / 20 + 0.04,
        2.0 + 32 / 20 + 8 / 5 + 0.08,
    ]
    np.testing.assert_allclose(t, expected, rtol=1e-12)
    assert round_time(t) == pytest.approx(expected[2])


def test_device_round_time_zero_capacity_and_bad_input():
    t = device_round_time(1e9, np.array([0.0, 1.0]), 0.0, 0.0, np.array([0.0, 0.0]), np.array([1.0, 1.0]), 0.0)
    assert np.isinf(t[0]) and t[1] == pytest.approx(1.0)  # no upload bytes: zero bandwidth is fine
    with pytest.raises(ValueError, match="gflops"):
        device_round_time(1e9, np.array([-1.0]), 0, 0, np.array([1.0]), np.array([1.0]))


def test_round_time_empty():
    assert round_time(np.array([])) == 0.0
    assert round_time(np.array([1.5, 0.5])) == 1.5


def test_accept_by_deadline():
    times = np.array([3.0, 1.0, 2.0, 1.0, 10.0, np.inf, np.nan])
    assert accept_by_deadline(times, 3, 5.0).tolist() == [1, 3, 2]  # tie at 1.0: lower index first
    assert accept_by_deadline(times, 3, 1.5).tolist() == [1, 3]  # fewer than k make it
    assert accept_by_deadline(times, 3, 1.0).tolist() == [1, 3]  # finishing exactly at the deadline counts
    assert accept_by_deadline(times, 10, None).tolist() == [1, 3, 2, 0, 4]  # never inf/nan
    assert accept_by_deadline(times, 0, None).tolist() == []
    acc = accept_by_deadline(times, 2, 100.0)
    assert acc.dtype == np.int64 and round_time(times[acc]) == 1.0
    with pytest.raises(ValueError):
        accept_by_deadline(times, -1, None)


def test_simclock_state_roundtrip():
    c = SimClock()
    c.advance(0.1)
    c.advance(0.2)
    assert c.now == 0.1 + 0.2
    restored = SimClock.from_state(json.loads(json.dumps(c.state())))
    assert restored.now == c.now  # bit-exact through JSON
    restored.advance(1.0)
    c.advance(1.0)
    assert restored.now == c.now
    with pytest.raises(ValueError):
        c.advance(-1.0)
    with pytest.raises(ValueError):
        c.advance(float("nan"))


def test_mf_flops_hand_computed():
    # dim 8, MLP 16 -> 16 -> 8 -> 1: mults 256 + 128 + 8 = 392; forward = 2*8 + 2*392 = 800
    assert mf_flops(100, 5, 32, 8, [16, 8]) == 3 * 800 * 5 * 32
    assert mf_flops(10, 5, 32, 8, [16, 8]) == 3 * 800 * 5 * 10  # fewer samples than a batch
    assert mf_flops(100, 1, 1, 8, []) == 3 * 16  # pure matrix factorisation
