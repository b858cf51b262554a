"""Fusion of client updates over named float32 arrays: the weighted mean, and HeteroFL sharing across widths."""
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
