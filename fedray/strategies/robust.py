"""Byzantine-robust aggregation rules over the stacked deltas: coordinate-wise median, trimmed mean, multi-Krum.

Each rule sees the round's updates as one (n, P) float32 matrix, one flattened update per row, and reduces it to a
direction of P coordinates with vectorised numpy (no Python loop over coordinates). The rules ignore sample
weights: a weight is reported by the device itself, so an attacker could claim a large one to win the round.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fedray.strategies.base import Params, Strategy, check_updates, server_step

GRAM_BLOCK = 1 << 16  # columns per block of Krum's float64 Gram matrix (n x 64 Ki doubles at a time)


def stack(params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """The updates as an (n, P) float32 matrix, tensors flattened and concatenated in the order of params."""
    check_updates(params, updates)
    sizes = [int(np.size(p)) for p in params.values()]
    starts = np.cumsum([0] + sizes)
    matrix = np.empty((len(updates), starts[-1]), np.float32)
    for row, update in zip(matrix, updates):  # a loop over updates and tensors, each copied once into place
        for name, start, end in zip(params, starts[:-1], starts[1:]):
            row[start:end] = np.ravel(update[name])
    return matrix


def unstack(params: Mapping[str, np.ndarray], flat: np.ndarray) -> Params:
    """Split a length-P vector back into float32 tensors shaped like params."""
    out, start = {}, 0
    for name, p in params.items():
        size = int(np.size(p))
        out[name] = flat[start:start + size].reshape(np.shape(p)).astype(np.float32, copy=False)
        start += size
    return out


def coordinate_median(matrix: np.ndarray) -> np.ndarray:
    """Median of each column (the mean of the two middle values when n is even).

    A full sort down the columns: on an (n, P) float32 matrix it runs 3-4x faster than np.median's partition.
    """
    n = matrix.shape[0]
    ordered = np.sort(matrix, axis=0)
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) * np.float32(0.5)


def trimmed_mean(matrix: np.ndarray, trim_fraction: float) -> np.ndarray:
    """Mean of each column after dropping its floor(trim_fraction * n) largest and as many smallest values."""
    n = matrix.shape[0]
    drop = int(np.floor(trim_fraction * n))
    if 2 * drop >= n:
        raise ValueError(f"trim_fraction={trim_fraction} drops all {n} updates")
    kept = np.sort(matrix, axis=0)[drop:n - drop]
    return kept.mean(axis=0, dtype=np.float64).astype(np.float32)


def krum_scores(matrix: np.ndarray, byzantine: int) -> np.ndarray:
    """Krum score per row: the sum of squared distances to its n - f - 2 nearest other rows (Blanchard et al. 2017)."""
    n, size = matrix.shape
    mean = matrix.mean(axis=0, dtype=np.float64)  # centring keeps distances and loses less to cancellation
    gram = np.zeros((n, n))
    for start in range(0, size, GRAM_BLOCK):  # float64 in column blocks: the precision without a float64 copy
        centred = matrix[:, start:start + GRAM_BLOCK] - mean[start:start + GRAM_BLOCK]
        gram += centred @ centred.T
    norms = np.diag(gram)
    distances = np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
    np.fill_diagonal(distances, np.inf)  # a row is not its own neighbour
    neighbours = n - byzantine - 2
    return np.partition(distances, neighbours - 1, axis=1)[:, :neighbours].sum(axis=1)


def multi_krum(matrix: np.ndarray, byzantine: int, keep: int) -> np.ndarray:
    """Mean of the `keep` rows with the lowest Krum scores (ties go to the lower row), summed in row order."""
    chosen = np.sort(np.argsort(krum_scores(matrix, byzantine), kind="stable")[:keep])
    return matrix[chosen].mean(axis=0, dtype=np.float64).astype(np.float32)


class Median(Strategy):
    """Coordinate-wise median of the deltas (Yin et al. 2018), then a server SGD step; ignores sample weights."""

    def aggregate(self, round_: int, params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]],
                  weights: Sequence[float]) -> Params:
        """params + server_lr * coordinate-wise median."""
        return server_step(params, unstack(params, coordinate_median(stack(params, updates))), self.server_lr)


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean of the deltas (Yin et al. 2018), then a server SGD step; ignores sample weights."""

    def __init__(self, server_lr: float = 1.0, trim_fraction: float = 0.2):
        super().__init__(server_lr)
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5) (0.5 or more drops every update), got {trim_fraction}")
        self.trim_fraction = float(trim_fraction)

    def aggregate(self, round_: int, params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]],
                  weights: Sequence[float]) -> Params:
        """params + server_lr * coordinate-wise trimmed mean."""
        direction = trimmed_mean(stack(params, updates), self.trim_fraction)
        return server_step(params, unstack(params, direction), self.server_lr)


class Krum(Strategy):
    """Multi-Krum (Blanchard et al. 2017): mean of the `keep` deltas closest to their neighbours; ignores weights.

    `byzantine` (f) is how many updates may be adversarial; `keep` (m) defaults to n - f. Needs n >= 2f + 3 updates
    (Krum's guarantee asks n > 2f + 2) and n >= m + f.
    """

    def __init__(self, server_lr: float = 1.0, byzantine: int = 1, keep: int | None = None):
        super().__init__(server_lr)
        self.byzantine = check_count("byzantine", byzantine, minimum=0)
        self.keep = None if keep is None else check_count("keep", keep, minimum=1)

    def required_updates(self) -> int:
        """2f + 3, and at least keep + f when keep is set."""
        return max(2 * self.byzantine + 3, (self.keep or 0) + self.byzantine)

    def aggregate(self, round_: int, params: Mapping[str, np.ndarray], updates: Sequence[Mapping[str, np.ndarray]],
                  weights: Sequence[float]) -> Params:
        """params + server_lr * the multi-Krum mean."""
        n = len(updates)
        if n < self.required_updates():
            raise ValueError(f"krum with byzantine={self.byzantine}, keep={self.keep} needs at least "
                             f"{self.required_updates()} updates, got {n}")
        keep = n - self.byzantine if self.keep is None else self.keep
        direction = multi_krum(stack(params, updates), self.byzantine, keep)
        return server_step(params, unstack(params, direction), self.server_lr)


def check_count(name: str, value: int, minimum: int) -> int:
    """A whole-number setting as an int, or a ValueError naming it when it is fractional or below its minimum."""
    if isinstance(value, bool) or not float(value).is_integer() or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value}")
    return int(value)
