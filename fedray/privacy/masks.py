"""Masks in Z_M (M = 2^bits) expanded from a 32-byte seed by AES-256 in counter mode (from `cryptography`),
never numpy's PRNGs. Each seed is used for one expansion only (fresh per round and pair), so the all-zero
counter block is safe. AES-CTR rather than ChaCha20: with AES-NI it runs about 1.7x faster here, and mask
expansion is the protocol's hot path.

The keystream is read as the narrowest little-endian unsigned words that hold `bits` bits (uint8, 16, 32 or
64) and cut to their low `bits` bits: for a power-of-two modulus that is exactly uniform. Arithmetic on masked
vectors stays in that word type (wrapping modulo the word is exact modulo 2^bits), so a round at b = 8 draws a
quarter of the keystream and memory traffic that 32-bit words would.
"""
from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MAX_BITS = 62


def word_type(bits: int) -> type:
    """The narrowest unsigned word holding `bits` bits (uint8 .. uint64): masked vectors are computed in it."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"mask bits must be in 1..{MAX_BITS}, got {bits}")
    return next(w for w in (np.uint8, np.uint16, np.uint32, np.uint64) if bits <= 8 * np.dtype(w).itemsize)


def expand(seed: bytes, length: int, bits: int) -> np.ndarray:
    """`length` pseudo-random elements of Z_(2^bits) in word_type(bits), from a 32-byte seed (AES-256-CTR keystream)."""
    word = word_type(bits)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    values = np.frombuffer(encryptor.update(bytes(np.dtype(word).itemsize * length)), word)
    if bits == 8 * values.itemsize:
        return values  # read-only, which is all callers need
    return values & word((1 << bits) - 1)
