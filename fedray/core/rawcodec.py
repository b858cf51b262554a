"""Uncompressed float32 payloads (compression.method=none): bytes on the wire, validated on arrival."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def pack_float32(tensors: Sequence[np.ndarray]) -> bytes:
    """Concatenate tensors as little-endian float32 bytes."""
    if not tensors:
        return b""
    return np.concatenate([np.asarray(t, "<f4").ravel() for t in tensors]).tobytes()


def unpack_float32(payload: bytes, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Split a float32 payload into tensors of the given shapes; ValueError on a wrong length or non-finite value."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if len(payload) != 4 * sum(sizes):
        raise ValueError(f"float32 payload has {len(payload)} bytes, expected {4 * sum(sizes)}")
    flat = np.frombuffer(payload, "<f4")
    if not np.isfinite(flat).all():
        raise ValueError("float32 payload holds NaN or Inf")
    out, start = [], 0
    for size, shape in zip(sizes, shapes):
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out
