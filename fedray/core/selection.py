"""Random choice of each round's participants from a seeded generator."""
from __future__ import annotations

import math

import numpy as np


def participant_count(participants: float, group_size: int) -> int:
    """K for a round: a count if participants >= 1, else a fraction of the group (at least one, at most all)."""
    k = int(participants) if participants >= 1 else math.ceil(participants * group_size)
    return max(1, min(k, group_size))


def select(devices: np.ndarray, k: int, over_select: float, rng: np.random.Generator) -> np.ndarray:
    """ceil(k * over_select) distinct devices drawn uniformly (capped at the group), in draw order."""
    m = min(len(devices), math.ceil(k * over_select))
    return devices[rng.choice(len(devices), m, replace=False)]


def poisson(devices: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Each device independently with probability `rate` (Poisson sampling, what DP accounting assumes), in order."""
    return devices[rng.random(len(devices)) < rate]
