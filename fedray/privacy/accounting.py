"""Privacy accounting of horizontal rounds with Google's dp-accounting library (its RDP accountant).

Each round that releases a noised sum is a Poisson-sampled Gaussian mechanism: every live device of the group
takes part independently with probability q (the engine samples that way under DP), and the sum of clipped
updates gets Gaussian noise of std z * clip. Neighbouring datasets differ by one device's whole data (add or
remove one device): the guarantee is device-level. Groups hold disjoint devices, so a run's epsilon is the
largest of its groups'.

RDP composes by addition, so a group's RDP curve is the count-weighted sum of one round's curve per distinct
(q, z), each computed once by the library (RdpAccountant at its default orders); epsilon is the library's
conversion of that sum. This is exactly what composing every round into one RdpAccountant gives, without
recomputing each round's curve every round.
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass, field

import dp_accounting
import numpy as np
from dp_accounting import rdp
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon


class _DropFractionalOrderNotes(logging.Filter):
    """The library logs a warning per fractional RDP order whose series does not converge and leaves that order
    out; the result stays valid, so the note is dropped rather than printed on every round."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "_compute_log_a_frac failed to converge" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropFractionalOrderNotes())

ORDERS = np.array(rdp.RdpAccountant().orders)


def round_event(sampling_rate: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    """One round: a Gaussian of noise multiplier z on the sum, over a Poisson sample at rate q."""
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))


@functools.lru_cache(maxsize=256)
def round_rdp(sampling_rate: float, noise_multiplier: float) -> np.ndarray:
    """The RDP curve (at ORDERS) of one round at (q, z), from the library's accountant."""
    accountant = rdp.RdpAccountant()
    accountant.compose(round_event(sampling_rate, noise_multiplier))
    curve = accountant.rdp
    curve.setflags(write=False)
    return curve


def epsilon_of(rounds: Counter, delta: float) -> float:
    """Epsilon at delta after the rounds counted by (sampling_rate, noise_multiplier)."""
    if not rounds:
        return 0.0
    total = sum(count * round_rdp(q, z) for (q, z), count in sorted(rounds.items()))
    return float(compute_epsilon(ORDERS, total, delta)[0])


@dataclass
class Accountant:
    """The rounds a group has released, and the epsilon they spend at delta (rebuilt from them on resume)."""

    delta: float
    rounds: Counter = field(default_factory=Counter)

    def spend(self, sampling_rate: float, noise_multiplier: float) -> float:
        """Count one released round; returns the epsilon spent so far."""
        self.rounds[(float(sampling_rate), float(noise_multiplier))] += 1
        return self.epsilon()

    def epsilon(self) -> float:
        """Epsilon at delta spent so far (0 before any round)."""
        return epsilon_of(self.rounds, self.delta)

    def epsilon_after(self, sampling_rate: float, noise_multiplier: float) -> float:
        """The epsilon one more round at (q, z) would bring the total to, without spending it."""
        return epsilon_of(self.rounds + Counter({(float(sampling_rate), float(noise_multiplier)): 1}), self.delta)


def calibrate_noise(target_epsilon: float, delta: float, sampling_rate: float, rounds: int) -> float:
    """The smallest noise multiplier (to 1e-3 relative) whose `rounds` rounds at rate q spend <= target_epsilon."""
    if not target_epsilon > 0 or not 0 < delta < 1 or not 0 < sampling_rate <= 1 or rounds < 1:
        raise ValueError(f"cannot calibrate for epsilon={target_epsilon}, delta={delta}, q={sampling_rate}, "
                         f"rounds={rounds}")
    def spends(z: float) -> float:
        return epsilon_of(Counter({(sampling_rate, z): rounds}), delta)

    low, high = 0.5, 1.0  # bracket the answer between z and 2z, then bisect: epsilon falls as z grows
    while spends(high) > target_epsilon:
        low, high = high, 2 * high
    while low > 1e-3 and spends(low) <= target_epsilon:
        low, high = low / 2, low
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if spends(mid) > target_epsilon else (low, mid)
    return high
