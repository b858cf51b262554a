"""The accountant against dp-accounting's own RdpAccountant and a published value; noise calibration."""
from collections import Counter

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from fedray.privacy.accounting import ORDERS, Accountant, calibrate_noise, epsilon_of, round_rdp


def reference_epsilon(rounds: list[tuple[float, float, int]], delta: float) -> float:
    """The library used directly: every round composed into one RdpAccountant."""
    accountant = rdp.RdpAccountant()
    for q, z, count in rounds:
        accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), count)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("rounds", [
    [(64 / 671, 1.0, 30)],
    [(0.1, 2.0, 20)],
    [(0.01, 1.1, 1000)],
    [(64 / 671, 1.0, 10), (64 / 600, 1.0, 5), (0.2, 3.0, 2)],  # hosts lost mid-run change q
])
def test_the_accountant_matches_the_librarys_reference(rounds):
    accountant = Accountant(1e-5)
    for q, z, count in rounds:
        for _ in range(count):
            accountant.spend(q, z)
    assert accountant.epsilon() == pytest.approx(reference_epsilon(rounds, 1e-5), rel=1e-9)


def test_the_accountant_reproduces_tf_privacys_published_mnist_epsilon():
    """TF Privacy's MNIST tutorial README: N=60000, batch 256, noise 1.1, 60 epochs, delta 1e-5 -> eps = 3.01,
    computed with the classic RDP-to-DP conversion eps = min_a rdp(a) + log(1/delta) / (a - 1) over the orders
    1.1..10.9 and 12..63. The same curve through the library's tighter conversion must give less."""
    q, steps = 256 / 60000, int(60 * 60000 / 256)
    curve = steps * round_rdp(q, 1.1)
    old = np.isin(ORDERS, [1 + x / 10 for x in range(1, 100)] + list(range(12, 64)))
    classic = float(np.min(curve[old] + np.log(1 / 1e-5) / (ORDERS[old] - 1)))
    assert classic == pytest.approx(3.01, abs=0.005)
    assert epsilon_of(Counter({(q, 1.1): steps}), 1e-5) < classic


def test_epsilon_after_looks_ahead_without_spending():
    accountant = Accountant(1e-5)
    assert accountant.epsilon() == 0.0
    ahead = accountant.epsilon_after(0.1, 1.0)
    assert accountant.epsilon() == 0.0
    assert accountant.spend(0.1, 1.0) == pytest.approx(ahead)
    assert accountant.epsilon_after(0.1, 1.0) > ahead


@pytest.mark.parametrize("target,q,rounds", [(8.0, 64 / 671, 30), (1.0, 0.1, 20)])
def test_calibrated_noise_spends_at_most_the_target_and_barely_less_noise_would_exceed_it(target, q, rounds):
    z = calibrate_noise(target, 1e-5, q, rounds)
    assert reference_epsilon([(q, z, rounds)], 1e-5) <= target
    assert reference_epsilon([(q, z * 0.995, rounds)], 1e-5) > target


def test_calibration_rejects_impossible_parameters():
    with pytest.raises(ValueError, match="delta=2"):
        calibrate_noise(1.0, 2, 0.1, 10)
