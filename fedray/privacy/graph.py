"""The sparse neighbour graph of SecAgg+ (Bell et al. 2020): a Harary graph over a random ordering.

Each participant masks and shares only with its neighbours, so a device's work grows with log n, not n. The graph
is public (the driver routes by it); it is drawn from the run's seeded stream so a resumed run meets the same
dropout outcomes, which keys and masks (fresh entropy) never influence.
"""
from __future__ import annotations

import math

import numpy as np


def default_degree(n: int) -> int:
    """Neighbours per participant: every other one up to 16 participants, else an even number ~ 3 log2 n."""
    if n <= 16:
        return n - 1
    return min(n - 1, 2 * math.ceil(1.5 * math.log2(n)))


def neighbours(participants: np.ndarray, degree: int | None, rng: np.random.Generator) -> dict[int, tuple[int, ...]]:
    """Each participant's neighbours: the `degree` nearest (degree/2 on each side) on a random cycle of all of them.

    degree None: default_degree(n); a degree >= n - 1 gives the complete graph (plain SecAgg).
    """
    participants = np.asarray(participants, np.int64)
    n = len(participants)
    k = default_degree(n) if degree is None else min(int(degree), n - 1)
    if n and k < 1 and n > 1:
        raise ValueError(f"neighbour degree must be >= 1, got {degree}")
    if k >= n - 1:
        return {int(d): tuple(int(o) for o in participants if o != d) for d in participants}
    order = participants[rng.permutation(n)]
    half, odd = divmod(k, 2)
    out: dict[int, set[int]] = {int(d): set() for d in participants}
    for pos, dev in enumerate(order):
        for step in range(1, half + 1):
            other = int(order[(pos + step) % n])
            out[int(dev)].add(other)
            out[other].add(int(dev))
        if odd:  # odd degree: also the participant opposite on the cycle (n even keeps it regular)
            other = int(order[(pos + n // 2) % n])
            out[int(dev)].add(other)
            out[other].add(int(dev))
    return {d: tuple(sorted(v)) for d, v in out.items()}


def share_threshold(fraction: float, holders: int) -> int:
    """Shares needed to rebuild a secret held by `holders` neighbours: ceil(fraction * holders), at least 1."""
    return max(1, min(holders, math.ceil(fraction * holders - 1e-9)))
