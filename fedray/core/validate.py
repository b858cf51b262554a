"""Admission checks on what a device returns, before anything of it reaches the global model."""
from __future__ import annotations

import numpy as np

HEADER_SLACK = 1 << 16  # bytes allowed above the float32 size of the model (headers, row bitmaps)


def check_result(device: object, samples: object, payload: object, selected: set[int], seen: set[int],
                 max_bytes: int) -> str | None:
    """Why a device's returned update must be rejected (None if it may be decoded): unexpected or duplicate
    device, sample count, payload type and size."""
    if not isinstance(device, (int, np.integer)) or int(device) not in selected:
        return "unexpected_device"
    if int(device) in seen:
        return "duplicate"
    if not isinstance(samples, (int, np.integer)) or samples <= 0:
        return "bad_samples"
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return "payload_type"
    if len(payload) > max_bytes:
        return "oversized"
    return None


def check_tensors(tensors: list[np.ndarray], shapes: list[tuple[int, ...]]) -> str | None:
    """Why decoded tensors must be rejected: wrong shapes, or NaN/Inf anywhere."""
    if [tuple(t.shape) for t in tensors] != [tuple(s) for s in shapes]:
        return "shape_mismatch"
    if not all(np.isfinite(t).all() for t in tensors):
        return "non_finite"
    return None


def clip_norm(tensors: list[np.ndarray], max_norm: float | None) -> tuple[list[np.ndarray], bool]:
    """Scale an update down to L2 norm max_norm (against outliers); returns (tensors, whether it was clipped)."""
    if not max_norm:
        return tensors, False
    norm = float(np.sqrt(sum(float(np.dot(t.ravel(), t.ravel())) for t in tensors)))
    if norm <= max_norm:
        return tensors, False
    factor = np.float32(max_norm / norm)
    return [t * factor for t in tensors], True
