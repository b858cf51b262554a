"""Quantize before masking: every participant ternarizes against the round's common per-tensor scales, so the
weighted sum of trits is an exact integer that survives arithmetic in Z_M.

Scale choice. A scale equal to the L2 clip bound C keeps every coordinate in range but makes the ternary noise
huge (variance ~ C * ||x||_1, up to C^2 sqrt(d)). Instead tensor t of d_t elements gets
s_t = min(C, coordinate_clip * C / sqrt(d_t)): coordinates beyond s_t are clipped (a bias, only on coordinates
far above the RMS a norm-C update spread evenly would have), and the ternary noise drops to ~ s_t * ||x_t||_1.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def tensor_scales(sizes: Sequence[int], clip: float, coordinate_clip: float) -> np.ndarray:
    """The round's per-tensor scales: min(clip, coordinate_clip * clip / sqrt(size)), float32."""
    sizes = np.maximum(np.asarray(sizes, np.float64), 1.0)
    return np.minimum(clip, coordinate_clip * clip / np.sqrt(sizes)).astype(np.float32)


def clip_l2(tensors: Sequence[np.ndarray], clip: float) -> tuple[list[np.ndarray], bool]:
    """The tensors scaled down together to L2 norm <= clip; whether they were."""
    norm = math.sqrt(sum(float(np.square(t, dtype=np.float64).sum()) for t in tensors))  # no BLAS: same bits everywhere
    if norm <= clip or norm == 0.0:
        return [np.asarray(t, np.float32) for t in tensors], False
    factor = np.float32(clip / norm)
    return [(np.asarray(t, np.float32) * factor).astype(np.float32) for t in tensors], True


def ternarize(tensors: Sequence[np.ndarray], scales: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Trits (int8, all tensors flattened and concatenated): each element clipped to [-s, s], then
    t = floor(x / s + u), u ~ U[0, 1) from the device's seeded quantizer stream, so E[s * t] = clipped x."""
    flat = np.concatenate([np.asarray(t, np.float32).ravel() for t in tensors]) if tensors else np.zeros(0, np.float32)
    per = np.repeat(np.asarray(scales, np.float32), [int(np.size(t)) for t in tensors])
    ratio = np.clip(np.divide(flat, per, out=np.zeros_like(flat), where=per > 0), -1.0, 1.0)
    return np.floor(ratio + rng.random(flat.size, dtype=np.float32)).astype(np.int8)


def dequantize(trits: np.ndarray, scales: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """s_t * trits per tensor (float32), flat; the device's own view of what it sent (for error feedback)."""
    per = np.repeat(np.asarray(scales, np.float32), list(sizes))
    values = (np.asarray(trits, np.float32) * per).astype(np.float32)
    return np.split(values, np.cumsum(list(sizes))[:-1])


def mean_update(total: np.ndarray, total_weight: int, scales: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """The weighted mean of the devices' quantized updates from the exact integer sum of weighted trits."""
    if total_weight <= 0:
        raise ValueError(f"total weight must be > 0, got {total_weight}")
    sizes = [int(np.prod(s)) for s in shapes]
    per = np.repeat(np.asarray(scales, np.float64), sizes)
    values = (np.asarray(total, np.float64) * per / total_weight).astype(np.float32)
    return [part.reshape(shape) for part, shape in zip(np.split(values, np.cumsum(sizes)[:-1]), shapes)]


def integer_weights(samples: np.ndarray, levels: int) -> np.ndarray:
    """FedAvg weights as integers 1..levels: ceil(levels * samples / max(samples)). levels=1 is the plain mean."""
    samples = np.asarray(samples, np.float64)
    if levels < 1:
        raise ValueError(f"weight levels must be >= 1, got {levels}")
    if samples.size == 0:
        return np.zeros(0, np.int64)
    return np.clip(np.ceil(levels * samples / samples.max() - 1e-9), 1, levels).astype(np.int64)


def modulus_bits(total_weight: int, noise_bound: int = 0) -> int:
    """b with M = 2^b holding every sum in [-(W + noise), W + noise] exactly: ceil(log2(2 (W + noise) + 1))."""
    return max(1, math.ceil(math.log2(2 * (int(total_weight) + int(noise_bound)) + 1)))


def centred(values: np.ndarray, bits: int) -> np.ndarray:
    """Elements of Z_(2^bits) (uint64) as the signed integers in [-2^(bits-1), 2^(bits-1)) they stand for."""
    values = np.asarray(values).astype(np.int64)
    half = 1 << (bits - 1)
    return np.where(values >= half, values - (1 << bits), values)
