"""b-bit packing of Z_(2^b) vectors: element i occupies bits [i*b, (i+1)*b) of the body, least significant first."""
from __future__ import annotations

import numpy as np


class PackingError(ValueError):
    """A packed body whose length does not match the element count and bit width."""


def packed_size(length: int, bits: int) -> int:
    """Bytes that `length` elements of `bits` bits take."""
    return -(-length * bits // 8)


def pack(values: np.ndarray, bits: int) -> bytes:
    """Values in [0, 2^bits) packed back to back at `bits` bits each (vectorised over a bit matrix)."""
    values = np.asarray(values, np.uint64)
    if not 1 <= bits <= 64:
        raise PackingError(f"bits must be in 1..64, got {bits}")
    if bits < 64 and values.size and int(values.max()) >> bits:
        raise PackingError(f"a value does not fit in {bits} bits")
    nbytes = -(-bits // 8)  # each value's low bytes as bits, then keep the low `bits` columns (all uint8 work)
    as_bytes = values.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :nbytes]
    matrix = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :bits]
    return np.packbits(matrix.reshape(-1), bitorder="little").tobytes()


def unpack(body: bytes, length: int, bits: int) -> np.ndarray:
    """The `length` values of a body written by pack(); raises PackingError on a wrong length or nonzero padding."""
    if len(body) != packed_size(length, bits):
        raise PackingError(f"packed body of {len(body)} bytes, expected {packed_size(length, bits)} "
                           f"for {length} elements of {bits} bits")
    tail = (length * bits) % 8
    if tail and len(body) and body[-1] >> tail:
        raise PackingError("nonzero padding bits after the last element")
    if bits > 56:  # a value may straddle 9 bytes: go through the bit matrix
        flat = np.unpackbits(np.frombuffer(body, np.uint8), bitorder="little")
        nbytes = -(-bits // 8)
        matrix = np.zeros((length, 8 * nbytes), np.uint8)
        matrix[:, :bits] = flat[: length * bits].reshape(length, bits)
        out = np.zeros((length, 8), np.uint8)
        out[:, :nbytes] = np.packbits(matrix, axis=1, bitorder="little")
        return out.view("<u8").reshape(length).astype(np.uint64)
    buf = np.concatenate([np.frombuffer(body, np.uint8), np.zeros(8, np.uint8)])
    offset = np.arange(length, dtype=np.int64) * bits
    first = offset >> 3
    word = np.zeros(length, np.uint64)
    for k in range(-(-(bits + 7) // 8)):  # gather the bytes each value touches, little-endian
        word |= buf[first + k].astype(np.uint64) << np.uint64(8 * k)
    return (word >> (offset & 7).astype(np.uint64)) & np.uint64((1 << bits) - 1)
