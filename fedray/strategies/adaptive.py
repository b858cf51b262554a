"""Adaptive server optimizers of Reddi et al. 2021 ("Adaptive Federated Optimization"): FedAdam, FedYogi, FedAdagrad.

All three apply, per coordinate, to the sample-weighted mean d of the deltas:
    m = beta1 * m + (1 - beta1) * d
    v = second_moment(v, d)                  (the only difference between the three)
    x = x + server_lr * m / (sqrt(v) + tau)
with m and v starting at zero and no bias correction, in float32 (FedAdam matches the FedAdam fedray had before strategies, bit for bit).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fedray.core import fusion
from fedray.strategies.base import Params, Strategy, check_updates, load_prefixed


class AdaptiveStrategy(Strategy):
    """Shared step of FedAdam, FedYogi and FedAdagrad; subclasses define the second-moment update."""

    def __init__(self, server_lr: float = 1.0, beta1: float = 0.9, tau: float = 1e-3):
        super().__init__(server_lr)
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
        if not np.isfinite(tau) or tau <= 0:
            raise ValueError(f"tau must be finite and > 0, got {tau}")
        self.beta1, self.tau = float(beta1), float(tau)
        self.m: Params = {}
        self.v: Params = {}

    def second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        """The new second moment from the old one and this round's direction."""
        raise NotImplementedError

    def aggregate(self, round_: int, params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]],
                  weights: Sequence[float]) -> Params:
        """One adaptive step on the weighted mean of the deltas."""
        check_updates(params, updates)
        direction = fusion.weighted_mean(updates, weights)
        out = {}
        for name, p in params.items():
            d = direction[name]
            m = self.m.get(name, np.zeros_like(p))
            v = self.v.get(name, np.zeros_like(p))
            m = np.float32(self.beta1) * m + np.float32(1 - self.beta1) * d
            v = self.second_moment(v, d)
            self.m[name], self.v[name] = m, v
            out[name] = (p + np.float32(self.server_lr) * m / (np.sqrt(v) + np.float32(self.tau))).astype(np.float32)
        return out

    def state(self) -> Params:
        """The moments, keyed m/<name> and v/<name> (the layout older checkpoints used)."""
        return {**{f"m/{k}": v for k, v in self.m.items()}, **{f"v/{k}": v for k, v in self.v.items()}}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the moments written by state() (or by the pre-strategy optimizer); unknown keys are an error."""
        moments = load_prefixed(state, ("m", "v"))
        self.m, self.v = moments["m"], moments["v"]


class FedAdam(AdaptiveStrategy):
    """FedAdam: v = beta2 * v + (1 - beta2) * d^2."""

    def __init__(self, server_lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        super().__init__(server_lr, beta1, tau)
        self.beta2 = check_beta2(beta2)

    def second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Exponential moving average of d^2."""
        return np.float32(self.beta2) * v + np.float32(1 - self.beta2) * d * d


class FedYogi(AdaptiveStrategy):
    """FedYogi: v = v - (1 - beta2) * d^2 * sign(v - d^2), which grows v no faster than d^2 demands."""

    def __init__(self, server_lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        super().__init__(server_lr, beta1, tau)
        self.beta2 = check_beta2(beta2)

    def second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Yogi's additive, sign-controlled update of v."""
        squared = d * d
        return v - np.float32(1 - self.beta2) * squared * np.sign(v - squared)


class FedAdagrad(AdaptiveStrategy):
    """FedAdagrad: v = v + d^2 (no beta2)."""

    def second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Running sum of d^2."""
        return v + d * d


def check_beta2(beta2: float) -> float:
    """beta2 as a float, or a ValueError when it is outside [0, 1)."""
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"beta2 must be in [0, 1), got {beta2}")
    return float(beta2)
