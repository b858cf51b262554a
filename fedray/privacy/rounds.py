"""What a device does with its update in a secure round, before masking: clip, ternarize against the driver's
common scales, weight by an integer. The result sums exactly (in Z_M) with the other participants'."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from fedray.privacy import dp, quantize


@dataclass(frozen=True)
class SecureRound:
    """The driver's instructions to a group's participants: L2 clip bound, per-tensor scales, integer weights."""

    clip: float
    scales: tuple[float, ...]
    weights: Mapping[int, int]
    dp_bound: float | None = None  # DP: trits capped so that scale * trits has L2 norm <= this (the sensitivity)
    noise_stds: tuple[float, ...] = ()  # distributed DP: per tensor, the std of the summed integer noise
    noise_shares: int = 1  # distributed DP: each device adds 1/noise_shares of that variance
    noise_kind: str = "skellam"


def secure_input(update: Sequence[np.ndarray], residual: list[np.ndarray] | None, error_feedback: bool,
                 plan: SecureRound, weight: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """(weight * trits as int64, new error-feedback residual or None): the update plus the residual, clipped to
    the L2 bound, ternarized unbiasedly against the common scales; the residual keeps the quantization error."""
    x = [np.asarray(u, np.float32) for u in update]
    if error_feedback and residual is not None:
        x = [(u + r).astype(np.float32) for u, r in zip(x, residual)]
    clipped, _ = quantize.clip_l2(x, plan.clip)
    scales = np.asarray(plan.scales, np.float32)
    trits = quantize.ternarize(clipped, scales, rng)
    sizes = [c.size for c in clipped]
    if plan.dp_bound is not None:  # what is summed is scale * trits: bound its norm, not the float update's
        parts = np.split(trits, np.cumsum(sizes)[:-1]) if sizes else []
        trits = np.concatenate(dp.cap_trits(parts, plan.scales, plan.dp_bound, rng)).astype(np.int8)
    new_residual = None
    if error_feedback:
        sent = quantize.dequantize(trits, scales, [c.size for c in clipped])
        new_residual = [(c - s.reshape(c.shape)).astype(np.float32) for c, s in zip(clipped, sent)]
    values = int(weight) * trits.astype(np.int64)
    if plan.noise_stds:  # distributed DP: integer noise from fresh entropy, added before masking
        values = values + dp.secure_noise(sizes, plan.noise_stds, plan.noise_shares, plan.noise_kind, dp.fresh_rng())
    return values, new_residual
