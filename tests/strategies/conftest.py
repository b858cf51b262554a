"""The server optimizer fedray had before strategies, kept as the reference the strategies must match bit for bit
(old runs' numbers and old checkpoints' optimizer state stay valid)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pytest

Params = dict[str, np.ndarray]


class LegacyServerOptimizer:
    """x += lr * d (sgd) or FedAdam without bias correction, in float32, as fedray.core.fusion had it."""

    def __init__(self, kind: str = "sgd", lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        self.kind, self.lr, self.beta1, self.beta2, self.tau = kind, lr, beta1, beta2, tau
        self.m: Params = {}
        self.v: Params = {}

    def step(self, params: Mapping[str, np.ndarray], direction: Mapping[str, np.ndarray]) -> Params:
        if self.kind == "sgd":
            return {k: (p + np.float32(self.lr) * direction[k]).astype(np.float32) for k, p in params.items()}
        out = {}
        for k, p in params.items():
            d = direction[k]
            m = np.float32(self.beta1) * self.m.get(k, np.zeros_like(p)) + np.float32(1 - self.beta1) * d
            v = np.float32(self.beta2) * self.v.get(k, np.zeros_like(p)) + np.float32(1 - self.beta2) * d * d
            self.m[k], self.v[k] = m, v
            out[k] = (p + np.float32(self.lr) * m / (np.sqrt(v) + np.float32(self.tau))).astype(np.float32)
        return out

    def state(self) -> Params:
        return {**{f"m/{k}": v for k, v in self.m.items()}, **{f"v/{k}": v for k, v in self.v.items()}}


@pytest.fixture(scope="session")
def legacy_optimizer() -> type[LegacyServerOptimizer]:
    return LegacyServerOptimizer
