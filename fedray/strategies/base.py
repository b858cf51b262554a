"""The Strategy API: server-side hooks of a federated round, as a plain class (no Ray).

- ``configure``: choose the round's participants among a group's live devices and the config sent to them;
- ``aggregate``: decoded updates (model deltas, new - old) and sample weights in, new global weights out;
- ``evaluate``: optional server-side metrics of the new global weights;
- ``state`` / ``load_state``: what a checkpoint must hold for a bit-exact resume (momentum, moments).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from fedray.core import selection

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class DeviceConfig:
    """Per-round instructions sent to every participant of a group."""

    proximal_mu: float = 0.0  # FedProx's mu (0: plain local training)


@dataclass(frozen=True)
class RoundPlan:
    """A group's participants for one round, in draw order, and what they are told."""

    devices: np.ndarray
    config: DeviceConfig


class Strategy:
    """FedAvg-shaped base: uniform selection, no device config, subclasses implement aggregate."""

    def __init__(self, server_lr: float = 1.0):
        if not np.isfinite(server_lr) or server_lr <= 0:
            raise ValueError(f"server_lr must be finite and > 0, got {server_lr}")
        self.server_lr = float(server_lr)

    def configure(self, round_: int, devices: np.ndarray, k: int, over_select: float,
                  rng: np.random.Generator) -> RoundPlan:
        """ceil(k * over_select) distinct devices drawn uniformly from `devices`, with the default device config."""
        return RoundPlan(selection.select(devices, k, over_select, rng), DeviceConfig())

    def aggregate(self, round_: int, params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]],
                  weights: Sequence[float]) -> Params:
        """New global weights from the old ones and the round's decoded updates (given in device order)."""
        raise NotImplementedError(f"{type(self).__name__}.aggregate is not implemented")

    def evaluate(self, round_: int, params: Mapping[str, np.ndarray]) -> dict[str, float] | None:
        """Optional server-side metrics of the new global weights."""
        return None

    def state(self) -> Params:
        """Arrays a checkpoint stores to resume this strategy bit for bit (empty when stateless)."""
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what state() returned."""
