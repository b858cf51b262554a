"""Masks in Z_M (M = 2^bits) expanded from a 32-byte seed by ChaCha20 (from `cryptography`), never numpy's PRNGs.

The keystream is read as little-endian uint32 (bits <= 32) or uint64 words and cut to their low `bits` bits:
for a power-of-two modulus that is exactly uniform.
"""
from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

MAX_BITS = 62


def expand(seed: bytes, length: int, bits: int) -> np.ndarray:
    """`length` pseudo-random elements of Z_(2^bits) as uint64, from a 32-byte seed (ChaCha20 keystream)."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"mask bits must be in 1..{MAX_BITS}, got {bits}")
    word = 4 if bits <= 32 else 8
    encryptor = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor()
    stream = encryptor.update(b"\0" * (word * length))
    values = np.frombuffer(stream, np.uint32 if word == 4 else np.uint64).astype(np.uint64)
    return values & np.uint64((1 << bits) - 1)
