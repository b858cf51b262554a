"""Weighted-mean strategies: FedAvg, FedAvgM (server momentum) and FedProx (a proximal term on the devices)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fedray.core import fusion
from fedray.strategies.base import DeviceConfig, Params, RoundPlan, Strategy, check_updates, load_prefixed, server_step


class FedAvg(Strategy):
    """FedAvg (McMahan et al. 2017): sample-weighted mean of the deltas, then a server SGD step of size server_lr."""

    def aggregate(self, round_: int, params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]],
                  weights: Sequence[float]) -> Params:
        """params + server_lr * weighted mean, bit-identical to the server SGD step fedray used before strategies."""
        check_updates(params, updates)
        return server_step(params, fusion.weighted_mean(updates, weights), self.server_lr)


class FedAvgM(Strategy):
    """FedAvgM (Hsu et al. 2019): velocity = momentum * velocity + weighted mean; params + server_lr * velocity."""

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9):
        super().__init__(server_lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.velocity: Params = {}

    def aggregate(self, round_: int, params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]],
                  weights: Sequence[float]) -> Params:
        """One momentum step on the weighted mean of the deltas; the velocity starts at zero."""
        check_updates(params, updates)
        mean = fusion.weighted_mean(updates, weights)
        for name, p in params.items():
            previous = self.velocity.get(name, np.zeros_like(p, dtype=np.float32))
            self.velocity[name] = np.float32(self.momentum) * previous + mean[name]
        return server_step(params, self.velocity, self.server_lr)

    def state(self) -> Params:
        """The velocity per tensor, keyed velocity/<name>."""
        return {f"velocity/{name}": v for name, v in self.velocity.items()}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the velocity written by state(); a key of another strategy is an error, not silently dropped."""
        self.velocity = load_prefixed(state, ("velocity",))["velocity"]


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg's aggregation; devices add (mu / 2) * ||w - w_global||^2 to their loss."""

    def __init__(self, server_lr: float = 1.0, proximal_mu: float = 0.01):
        super().__init__(server_lr)
        if not np.isfinite(proximal_mu) or proximal_mu < 0:
            raise ValueError(f"proximal_mu must be finite and >= 0, got {proximal_mu}")
        self.proximal_mu = float(proximal_mu)

    def configure(self, round_: int, devices: np.ndarray, k: int, over_select: float,
                  rng: np.random.Generator) -> RoundPlan:
        """FedAvg's uniform draw (same random stream), telling every participant the proximal mu."""
        plan = super().configure(round_, devices, k, over_select, rng)
        return RoundPlan(plan.devices, DeviceConfig(proximal_mu=self.proximal_mu))

