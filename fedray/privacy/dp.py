"""Device-level differential privacy of a round: L2 clipping, central Gaussian noise on the sum, and the integer
noise (discrete Gaussian or Skellam) each device adds before masking so that the sum carries the target noise.

Pure numpy, no Ray. Noise is drawn from fresh OS entropy (fresh_rng), never from the run seed: a driver that
knows the seed could regenerate the noise and subtract it.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np

Params = dict[str, np.ndarray]

# Clipping scales by bound / norm * (1 - CLIP_MARGIN): float32 rounding can then never leave a clipped update a
# hair above the bound the accountant assumes.
CLIP_MARGIN = 1e-6


def fresh_rng() -> np.random.Generator:
    """A generator seeded with 256 bits from the OS (os.urandom), independent of the run's seed."""
    return np.random.default_rng(int.from_bytes(os.urandom(32), "little"))


def l2_norm(tensors: Sequence[np.ndarray]) -> float:
    """The L2 norm of an update over all its tensors, accumulated in float64."""
    return math.sqrt(sum(float(np.dot(t.ravel().astype(np.float64), t.ravel().astype(np.float64))) for t in tensors))


def clip_update(tensors: Sequence[np.ndarray], bound: float) -> tuple[list[np.ndarray], bool]:
    """The update scaled down to L2 norm <= bound (float32), and whether it had to be scaled."""
    if not bound > 0:
        raise ValueError(f"clip bound must be > 0, got {bound}")
    norm = l2_norm(tensors)
    if norm <= bound:
        return [np.asarray(t, np.float32) for t in tensors], False
    factor = bound / norm * (1 - CLIP_MARGIN)
    return [(np.asarray(t, np.float64) * factor).astype(np.float32) for t in tensors], True


def central_mean(updates: Sequence[Mapping[str, np.ndarray]], clip: float, noise_multiplier: float,
                 denominator: float, rng: np.random.Generator) -> tuple[Params, int]:
    """DP-FedAvg's release (McMahan et al. 2018): (sum of clipped updates + N(0, (z*clip)^2)) / denominator.

    Every update weighs the same (sample counts would enter the sensitivity), and the denominator is fixed in
    advance (the expected participant count), so the release reveals nothing beyond the noised sum. Returns the
    noised mean and how many updates were clipped.
    """
    if not updates:
        raise ValueError("no updates to release")
    if not denominator > 0 or noise_multiplier < 0:
        raise ValueError(f"denominator must be > 0 and noise_multiplier >= 0, got {denominator}, {noise_multiplier}")
    names = list(updates[0])
    total = {k: np.zeros(np.shape(updates[0][k]), np.float64) for k in names}
    clipped = 0
    for update in updates:
        tensors, was_clipped = clip_update([update[k] for k in names], clip)
        clipped += was_clipped
        for k, t in zip(names, tensors):
            total[k] += t
    std = noise_multiplier * clip
    return {k: ((v + rng.normal(0.0, std, v.shape)) / denominator).astype(np.float32) for k, v in total.items()}, clipped


# ---- distributed noise: integers each device adds before masking (Kairouz, Liu and Steinke 2021) -------------

def discrete_laplace(size: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Integers with P(y) proportional to exp(-|y| / scale): the difference of two geometric draws."""
    p = -math.expm1(-1.0 / scale)
    return rng.geometric(p, size).astype(np.int64) - rng.geometric(p, size).astype(np.int64)


def discrete_gaussian(size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Integers with P(y) proportional to exp(-y^2 / (2 sigma^2)), by Canonne, Kamath and Steinke's (2020) rejection
    sampler from a discrete Laplace of scale floor(sigma) + 1, vectorised (float arithmetic, not exact rationals)."""
    if sigma <= 0:
        return np.zeros(size, np.int64)
    t = math.floor(sigma) + 1
    out = np.empty(size, np.int64)
    filled = 0
    while filled < size:
        need = size - filled
        batch = int(need * 1.3) + 16  # acceptance is at least about 1/e^(1/2) of draws
        y = discrete_laplace(batch, t, rng)
        accept = rng.random(batch) < np.exp(-((np.abs(y) - sigma * sigma / t) ** 2) / (2 * sigma * sigma))
        kept = y[accept][:need]
        out[filled:filled + len(kept)] = kept
        filled += len(kept)
    return out


def skellam(size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Integers of variance sigma^2: the difference of two Poisson(sigma^2 / 2) draws (sums stay Skellam)."""
    mu = sigma * sigma / 2
    return rng.poisson(mu, size).astype(np.int64) - rng.poisson(mu, size).astype(np.int64)


NOISES = {"discrete_gaussian": discrete_gaussian, "skellam": skellam}


def device_noise(size: int, total_std: float, devices: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One device's share of distributed noise: integers of variance total_std^2 / devices, so that the sum over
    the round's devices has variance total_std^2 (in the integer units that are summed under masking)."""
    if kind not in NOISES:
        raise ValueError(f"noise kind {kind!r}: allowed are {', '.join(NOISES)}")
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    return NOISES[kind](size, total_std / math.sqrt(devices), rng)


def integer_noise_stds(noise_multiplier: float, clip: float, scales: Sequence[float]) -> np.ndarray:
    """Per tensor, the std of the summed integer noise that is z * clip in float units once the sum of trits is
    multiplied by the tensor's scale s_t: z * clip / s_t."""
    return noise_multiplier * clip / np.asarray(scales, np.float64)


def noise_shares(selected: int, threshold: float) -> int:
    """How many devices' noise a secure round is sure to sum: ceil(threshold * selected), the fewest survivors
    secure aggregation unmasks. Each device adds 1/this of the variance, so any unmasked sum has at least the
    target noise (more when more devices survive)."""
    return max(1, math.ceil(threshold * selected))


def secure_noise(sizes: Sequence[int], stds: Sequence[float], shares: int, kind: str,
                 rng: np.random.Generator) -> np.ndarray:
    """One device's integer noise over its flattened tensors (int64), tensor t of variance stds[t]^2 / shares."""
    return np.concatenate([device_noise(int(n), float(std), shares, kind, rng) for n, std in zip(sizes, stds)]
                          or [np.zeros(0, np.int64)])


def noise_room(total_std: float, tail_sigmas: float = 12.0) -> int:
    """The magnitude the summed noise stays within but with probability below ~1e-32 per element (12 sigma): the
    room secure aggregation adds to its modulus so that noise never wraps around Z_M."""
    return int(math.ceil(tail_sigmas * total_std))


# ---- sensitivity of ternary updates -----------------------------------------------------------------------

def trit_norm(trits: Sequence[np.ndarray], scales: Sequence[float]) -> float:
    """The L2 norm of what a ternary update adds to the sum: sqrt(sum_t scale_t^2 * nnz(trits_t))."""
    return math.sqrt(sum(float(s) ** 2 * int(np.count_nonzero(t)) for t, s in zip(trits, scales)))


def cap_trits(trits: Sequence[np.ndarray], scales: Sequence[float], bound: float,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Trits whose summed contribution has L2 norm <= bound: when over it, a uniformly random subset of the
    nonzero trits is kept, as many as fit.

    Under secure aggregation the driver sums scale * trits, whose norm is scale * sqrt(nnz), not the clip bound
    of the float update; this cap is what makes `bound` the sensitivity. It biases an update that exceeds the
    bound towards zero (as clipping does); with a scale derived from the clip bound it seldom bites (see README).
    """
    out = [np.array(t, copy=True) for t in trits]
    if trit_norm(out, scales) <= bound:
        return out
    where = [np.flatnonzero(t.ravel()) for t in out]
    cost = np.concatenate([np.full(len(w), float(s) ** 2) for w, s in zip(where, scales)])
    tensor = np.concatenate([np.full(len(w), i) for i, w in enumerate(where)])
    index = np.concatenate(where)
    order = rng.permutation(len(cost))
    drop = order[np.cumsum(cost[order]) > bound * bound]
    for i, t in enumerate(out):
        flat = t.reshape(-1)
        flat[index[drop][tensor[drop] == i]] = 0
    return out
