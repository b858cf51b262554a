"""Simulated clock: how long a round *would* take on the devices' reported hardware.

Test machines are uniform, so wall time cannot show what tiering buys. Instead each device
gets a simulated round time from its reported speed and bandwidth (compute + download +
upload + latency); a round lasts as long as its slowest accepted device, and the run's
simulated time is the sum of its rounds. Pure numpy, no Ray.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def device_round_time(
    flops: np.ndarray | float,
    gflops: np.ndarray,
    bytes_up: np.ndarray | float,
    bytes_down: np.ndarray | float,
    up_mbps: np.ndarray,
    down_mbps: np.ndarray,
    latency_s: np.ndarray | float = 0.05,
) -> np.ndarray:
    """Simulated seconds per device: flops/(gflops*1e9) + bytes_down*8/(down_mbps*1e6) + bytes_up*8/(up_mbps*1e6) + latency.

    Arguments broadcast against each other. A zero speed or bandwidth gives ``inf`` (the
    device never finishes, so ``accept_by_deadline`` never accepts it); negative or NaN
    inputs raise ValueError.
    """
    args = {
        "flops": flops, "gflops": gflops, "bytes_up": bytes_up, "bytes_down": bytes_down,
        "up_mbps": up_mbps, "down_mbps": down_mbps, "latency_s": latency_s,
    }
    arr = {k: np.asarray(v, dtype=np.float64) for k, v in args.items()}
    bad = [k for k, v in arr.items() if np.any(np.isnan(v)) or np.any(v < 0)]
    if bad:
        raise ValueError(f"device_round_time inputs must be >= 0 and not NaN: {', '.join(bad)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        compute = _safe_div(arr["flops"], arr["gflops"] * 1e9)
        down = _safe_div(arr["bytes_down"] * 8.0, arr["down_mbps"] * 1e6)
        up = _safe_div(arr["bytes_up"] * 8.0, arr["up_mbps"] * 1e6)
    return np.asarray(compute + down + up + arr["latency_s"], dtype=np.float64)


def _safe_div(work: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """work / rate with 0/0 = 0 (nothing to do) and x/0 = inf (no capacity)."""
    out = work / rate
    return np.where(work == 0, 0.0, out)


def round_time(times: np.ndarray) -> float:
    """A round lasts as long as its slowest accepted device (0.0 for none)."""
    t = np.asarray(times, dtype=np.float64)
    return float(t.max()) if t.size else 0.0


def accept_by_deadline(times: np.ndarray, k: int, deadline_s: float | None) -> np.ndarray:
    """Indices of accepted devices: the k fastest that finish within the deadline (stable order by time, then index); the rest are stragglers.

    Returned in arrival order (time, then index), dtype int64. ``deadline_s=None`` means no
    deadline. Non-finite times (a device that drops out) are never accepted.
    """
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"times must be 1-D, got shape {t.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if deadline_s is not None and (np.isnan(deadline_s) or deadline_s < 0):
        raise ValueError(f"deadline_s must be >= 0 or None, got {deadline_s}")
    ok = np.isfinite(t)
    if deadline_s is not None:
        ok &= t <= deadline_s
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(t[idx], kind="stable")]  # idx ascending, so ties keep index order
    return order[:k].astype(np.int64)


class SimClock:
    """Cumulative simulated seconds of a run; checkpointable via state()/from_state()."""

    def __init__(self, now: float = 0.0) -> None:
        """Start at ``now`` seconds (0 for a new run)."""
        now = float(now)
        if not np.isfinite(now) or now < 0:
            raise ValueError(f"clock time must be finite and >= 0, got {now}")
        self._now = now

    @property
    def now(self) -> float:
        """Simulated seconds elapsed so far."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Add ``seconds`` (finite, >= 0) and return the new time."""
        s = float(seconds)
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"can only advance by a finite, non-negative time, got {seconds}")
        self._now += s
        return self._now

    def state(self) -> dict:
        """JSON-able state (floats round-trip exactly through Python's json)."""
        return {"now": self._now}

    @classmethod
    def from_state(cls, state: dict) -> "SimClock":
        """Rebuild a clock from ``state()``."""
        return cls(now=state["now"])

    def __repr__(self) -> str:
        return f"SimClock(now={self._now!r})"


def mf_flops(n_samples: int, local_steps: int, batch: int, dim: int, hidden: Sequence[int]) -> float:
    """Estimated FLOPs of one device's local training of a recommendation model.

    Model assumed: a dot-product (matrix-factorisation) branch over user/item embeddings of
    size ``dim`` plus an MLP over their concatenation: layers 2*dim -> hidden[0] -> ... ->
    hidden[-1] -> 1 (NCF-style). One forward per sample costs
    ``2*dim`` (the dot product, multiply + add) ``+ 2 * sum(in_i * out_i)`` over MLP layers;
    training costs about 3x forward (backward ~ 2x forward). Each of ``local_steps`` steps
    processes ``min(batch, n_samples)`` samples (a device with fewer samples than a batch
    uses them all). Embedding lookups, activations and optimizer updates are ignored: they are
    small next to the matrix products.
    """
    if min(n_samples, local_steps, batch, dim) < 0 or any(h <= 0 for h in hidden):
        raise ValueError("mf_flops arguments must be non-negative and hidden sizes positive")
    widths = [2 * dim, *[int(h) for h in hidden], 1] if len(hidden) else []
    mults = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    forward = 2 * dim + 2 * mults
    return float(3 * forward * local_steps * min(batch, n_samples))
