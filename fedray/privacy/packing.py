"""b-bit packing of Z_(2^b) vectors: element i occupies bits [i*b, (i+1)*b) of the body, least significant first.

Vectorised by groups of 8 elements: a group fills exactly b bytes, read as little-endian uint64 words, and
element j of every group sits at bit j*b of its group, so 8 column operations (each over all groups) pack or
unpack the whole vector.
"""
from __future__ import annotations

import numpy as np

GROUP = 8
BYTE_WIDTHS = {8: "<u1", 16: "<u2", 32: "<u4", 64: "<u8"}


class PackingError(ValueError):
    """A packed body whose length does not match the element count and bit width."""


def packed_size(length: int, bits: int) -> int:
    """Bytes that `length` elements of `bits` bits take."""
    return -(-length * bits // 8)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 64:
        raise PackingError(f"bits must be in 1..64, got {bits}")


def _words(bits: int) -> int:
    """uint64 words holding one group's b bytes, plus one spare so an element may straddle into it."""
    return -(-bits // 8) + 1


def pack(values: np.ndarray, bits: int) -> bytes:
    """Values in [0, 2^bits) packed back to back at `bits` bits each."""
    _check_bits(bits)
    values = np.asarray(values).astype(np.uint64)
    if bits < 64 and values.size and int(values.max()) >> bits:
        raise PackingError(f"a value does not fit in {bits} bits")
    if bits in BYTE_WIDTHS:  # whole bytes: the little-endian words are the body
        return values.astype(BYTE_WIDTHS[bits]).tobytes()
    n = len(values)
    groups = -(-n // GROUP)
    padded = np.zeros(groups * GROUP, np.uint64)
    padded[:n] = values
    v = padded.reshape(groups, GROUP)
    words = np.zeros((groups, _words(bits)), np.uint64)
    for j in range(GROUP):
        w, s = divmod(j * bits, 64)
        words[:, w] |= v[:, j] << np.uint64(s)
        if s + bits > 64:
            words[:, w + 1] |= v[:, j] >> np.uint64(64 - s)
    body = words.view("<u1").reshape(groups, 8 * _words(bits))[:, :bits]
    return body.tobytes()[: packed_size(n, bits)]


def unpack(body: bytes, length: int, bits: int) -> np.ndarray:
    """The `length` values (uint64) of a body written by pack(); PackingError on a wrong length or nonzero padding."""
    _check_bits(bits)
    if len(body) != packed_size(length, bits):
        raise PackingError(f"packed body of {len(body)} bytes, expected {packed_size(length, bits)} "
                           f"for {length} elements of {bits} bits")
    if bits in BYTE_WIDTHS:
        return np.frombuffer(body, BYTE_WIDTHS[bits]).astype(np.uint64)
    tail = (length * bits) % 8
    if tail and body[-1] >> tail:
        raise PackingError("nonzero padding bits after the last element")
    groups = -(-length // GROUP)
    raw = np.zeros((groups, 8 * _words(bits)), np.uint8)
    flat = np.zeros(groups * bits, np.uint8)
    flat[: len(body)] = np.frombuffer(body, np.uint8)
    raw[:, :bits] = flat.reshape(groups, bits)
    words = raw.view("<u8")
    out = np.empty((groups, GROUP), np.uint64)
    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    for j in range(GROUP):
        w, s = divmod(j * bits, 64)
        value = words[:, w] >> np.uint64(s)
        if s + bits > 64:
            value |= words[:, w + 1] << np.uint64(64 - s)
        out[:, j] = value & mask
    values = out.reshape(-1)
    if values[length:].any():
        raise PackingError("nonzero padding bits after the last element")
    return values[:length]
