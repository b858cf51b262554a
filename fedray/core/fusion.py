"""Fusion of client updates and server optimizers, over named float32 arrays."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Params = dict[str, np.ndarray]


def weighted_mean(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> Params:
    """Sample-count-weighted mean of updates, accumulated in a fixed order so the result is reproducible."""
    if not updates:
        raise ValueError("no updates to fuse")
    w = np.asarray(weights, np.float64)
    if (w <= 0).any() or not np.isfinite(w).all():
        raise ValueError(f"fusion weights must be positive and finite, got {w.tolist()}")
    w = (w / w.sum()).astype(np.float32)
    out = {k: np.zeros_like(v, dtype=np.float32) for k, v in updates[0].items()}
    for upd, wi in zip(updates, w):
        for k, acc in out.items():
            acc += wi * upd[k]
    return out


class ServerOptimizer:
    """Applies a fused update to the global parameters: plain SGD (x += lr * d) or FedAdam (Reddi et al., 2021)."""

    def __init__(self, kind: str = "sgd", lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        if kind not in ("sgd", "fedadam"):
            raise ValueError(f"server optimizer {kind!r}: allowed values are sgd, fedadam")
        self.kind, self.lr, self.beta1, self.beta2, self.tau = kind, lr, beta1, beta2, tau
        self.m: Params = {}
        self.v: Params = {}

    def step(self, params: Mapping[str, np.ndarray], direction: Mapping[str, np.ndarray]) -> Params:
        """New parameters from the old ones and a fused ascent direction (a delta, or minus a gradient)."""
        if self.kind == "sgd":
            return {k: (p + np.float32(self.lr) * direction[k]).astype(np.float32) for k, p in params.items()}
        out = {}
        for k, p in params.items():
            d = direction[k]
            m = self.m.get(k, np.zeros_like(p))
            v = self.v.get(k, np.zeros_like(p))
            m = np.float32(self.beta1) * m + np.float32(1 - self.beta1) * d
            v = np.float32(self.beta2) * v + np.float32(1 - self.beta2) * d * d
            self.m[k], self.v[k] = m, v
            out[k] = (p + np.float32(self.lr) * m / (np.sqrt(v) + np.float32(self.tau))).astype(np.float32)
        return out

    def state(self) -> Params:
        """Moment arrays for a checkpoint (empty for SGD)."""
        return {**{f"m/{k}": v for k, v in self.m.items()}, **{f"v/{k}": v for k, v in self.v.items()}}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore moments written by state()."""
        self.m = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("m/")}
        self.v = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("v/")}


def share_overlap(models: Sequence[Mapping[str, np.ndarray]]) -> list[Params]:
    """HeteroFL-style sharing: every parameter coordinate is averaged over the models whose (sliced) shape holds it."""
    out: list[Params] = [dict() for _ in models]
    for name in models[0]:
        arrays = [m[name] for m in models]
        full = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
        total = np.zeros(full, np.float64)
        count = np.zeros(full, np.float64)
        for a in arrays:
            region = tuple(slice(0, s) for s in a.shape)
            total[region] += a
            count[region] += 1
        mean = (total / np.maximum(count, 1)).astype(np.float32)
        for o, a in zip(out, arrays):
            o[name] = mean[tuple(slice(0, s) for s in a.shape)].copy()
    return out
