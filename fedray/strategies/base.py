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

    def required_updates(self) -> int:
        """Fewest updates aggregate accepts; the engine skips a round that decodes fewer rather than fail it."""
        return 1


def server_step(params: Mapping[str, np.ndarray], direction: Mapping[str, np.ndarray], server_lr: float) -> Params:
    """Server SGD step x + lr * d in float32, the exact arithmetic of the server step fedray used before strategies."""
    return {k: (p + np.float32(server_lr) * direction[k]).astype(np.float32) for k, p in params.items()}


def check_updates(params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Reject an empty round or an update whose tensor names or shapes differ from the global weights'."""
    if not updates:
        raise ValueError("no updates to aggregate")
    for index, update in enumerate(updates):
        if update.keys() != params.keys():
            raise ValueError(f"update {index}: tensors {sorted(update)} differ from the model's {sorted(params)}")
        for name, p in params.items():
            if np.shape(update[name]) != np.shape(p):
                raise ValueError(f"update {index}: tensor {name!r} has shape {np.shape(update[name])}, "
                                 f"expected {np.shape(p)}")


def load_prefixed(state: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, Params]:
    """Split checkpoint arrays keyed <prefix>/<tensor> into one float32 dict per prefix, rejecting unknown keys."""
    out: dict[str, Params] = {prefix: {} for prefix in prefixes}
    for key, value in state.items():
        prefix, _, name = key.partition("/")
        if prefix not in out or not name:
            raise ValueError(f"strategy state key {key!r}: expected one of {[p + '/<tensor>' for p in prefixes]}")
        out[prefix][name] = np.array(value, np.float32)
    return out
