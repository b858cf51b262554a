"""Shamir secret sharing of byte strings over the prime field GF(2^31 - 1), vectorised over chunks and holders.

A secret of n bytes is cut into 3-byte chunks (each < 2^24 < p), and every chunk is the constant term of its own
random polynomial of degree threshold - 1. Holder x (a nonzero field element, here device id + 1) gets the
polynomials' values at x. Products of two field elements fit in int64, so evaluation and interpolation are numpy.
"""
from __future__ import annotations

import os

import numpy as np

PRIME = (1 << 31) - 1
CHUNK_BYTES = 3


class ShamirError(ValueError):
    """Too few or inconsistent shares to reconstruct a secret."""


def random_field(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform field elements from the OS's entropy (64 random bits reduced mod p: bias below 2^-33)."""
    raw = np.frombuffer(os.urandom(8 * int(np.prod(shape))), np.uint64).reshape(shape)
    return (raw % np.uint64(PRIME)).astype(np.int64)


def secret_chunks(secret: bytes) -> np.ndarray:
    """The secret's bytes as field elements, 3 bytes (little-endian) each, zero-padded."""
    padded = secret + b"\0" * (-len(secret) % CHUNK_BYTES)
    b = np.frombuffer(padded, np.uint8).reshape(-1, CHUNK_BYTES).astype(np.int64)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)


def chunks_secret(chunks: np.ndarray, length: int) -> bytes:
    """Inverse of secret_chunks for a secret of `length` bytes; a chunk >= 2^24 means the shares were wrong."""
    chunks = np.asarray(chunks, np.int64)
    if (chunks >= 1 << 24).any():
        raise ShamirError("reconstructed chunk out of range: shares are inconsistent")
    b = np.stack([chunks & 0xFF, (chunks >> 8) & 0xFF, chunks >> 16], axis=1).astype(np.uint8)
    return b.tobytes()[:length]


def split(secret: bytes, holders: np.ndarray, threshold: int) -> np.ndarray:
    """Shares of a secret for each holder (x = nonzero field element): array (holders, chunks); any `threshold`
    of them reconstruct it, fewer reveal nothing about it."""
    holders = np.asarray(holders, np.int64)
    if not 1 <= threshold <= len(holders):
        raise ShamirError(f"threshold {threshold} must be between 1 and the {len(holders)} holders")
    if (holders <= 0).any() or (holders >= PRIME).any() or len(np.unique(holders)) != len(holders):
        raise ShamirError("holder points must be distinct nonzero field elements")
    secret_part = secret_chunks(secret)
    coeffs = random_field((threshold - 1, len(secret_part)))  # degree 1 .. threshold-1
    out = np.zeros((len(holders), len(secret_part)), np.int64)
    for c in coeffs[::-1]:  # Horner from the highest degree, all holders and chunks at once
        out = (out + c[None, :]) % PRIME
        out = (out * holders[:, None]) % PRIME
    return (out + secret_part[None, :]) % PRIME


def lagrange_at_zero(points: np.ndarray) -> np.ndarray:
    """Coefficients l_i with f(0) = sum_i l_i f(x_i) for a polynomial of degree < len(points)."""
    xs = [int(x) for x in points]
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        out.append(num * pow(den, PRIME - 2, PRIME) % PRIME)
    return np.array(out, np.int64)


def combine(points: np.ndarray, shares: np.ndarray, threshold: int, length: int) -> bytes:
    """The secret from at least `threshold` shares (rows of `shares`, held at `points`); raises ShamirError if fewer."""
    points = np.asarray(points, np.int64)
    shares = np.asarray(shares, np.int64)
    if len(points) < threshold:
        raise ShamirError(f"{len(points)} shares, {threshold} needed")
    points, shares = points[:threshold], shares[:threshold]
    coef = lagrange_at_zero(points)
    acc = np.zeros(shares.shape[1], np.int64)
    for c, row in zip(coef, shares):
        acc = (acc + (int(c) * row) % PRIME) % PRIME
    return chunks_secret(acc, length)
