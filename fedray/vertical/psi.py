"""Private set intersection by commutative blinding with X25519 (ECDH over Curve25519).

Each party holds a secret X25519 scalar. An id is hashed to 32 bytes and read as a Montgomery
u-coordinate P = H(id); blinding is X25519(k, P) = u([k]P), computed with ``cryptography``'s
``X25519PrivateKey.exchange`` on ``X25519PublicKey.from_public_bytes(P)``. Scalar
multiplication commutes, so X25519(a, X25519(b, P)) == X25519(b, X25519(a, P)); clamping only
fixes each party's scalar once (a multiple of 8 with the top bit set) and x-only arithmetic is
the same for P and -P, so the equality is exact (tests check it on thousands of ids).

About half of all 32-byte strings are u-coordinates of points on the quadratic twist rather
than the curve. X25519 is twist-secure (the twist's order is 4 * a 253-bit prime) and the
clamped scalar clears the cofactor, so blinding stays a keyed one-way map on both. A hashed
point of small order (probability ~2^-250) would make ``exchange`` raise; we let it.

Protocol between the business party B (scalar a) and a provider P (scalar b):
  1. B -> P: A  = [X25519(a, H(x)) for x in B's unique ids]
  2. P -> B: Ab = [X25519(b, v) for v in A]          (same order)
             Bb = [X25519(b, H(y)) for y in P's unique ids]
  3. B computes Bba = [X25519(a, v) for v in Bb] and matches Ab against Bba.
Steps run concurrently where they can: both parties blind their own ids at once, then B blinds
Bb while P re-blinds A, so the critical path is two blindings per id, not four.
B learns which of its ids the provider also holds and |P's ids|; P learns nothing in step 2.
B then tells P which of P's positions are aligned, in the agreed order: ascending by
B's single-blinded value A (pseudo-random under B's key, so it hides B's file order).
With several providers B intersects all pairwise matches and sends each provider its positions.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedray.data.vertical import VerticalDataError

DOMAIN = b"fedray/psi/x25519/v1\x00"


class PSIError(VerticalDataError):
    """Alignment failed: duplicate ids, or an empty or too small intersection (a data problem)."""


def hash_to_point(ids: Sequence[str]) -> list[bytes]:
    """SHA-256 of the domain-separated id, as a 32-byte X25519 u-coordinate."""
    h = hashlib.sha256
    return [h(DOMAIN + str(i).encode("utf-8")).digest() for i in ids]


class BlindingKey:
    """A party's secret PSI scalar. Only blinded 32-byte points ever leave the party."""

    def __init__(self) -> None:
        self._key = X25519PrivateKey.generate()

    def blind(self, points: Sequence[bytes]) -> list[bytes]:
        ex = self._key.exchange
        frm = X25519PublicKey.from_public_bytes
        return [ex(frm(p)) for p in points]

    def blind_ids(self, ids: Sequence[str]) -> list[bytes]:
        return self.blind(hash_to_point(ids))


@dataclass
class DuplicateReport:
    rows: int
    unique: int
    duplicated_ids: int  # ids that occur more than once
    extra_rows: int  # rows beyond the first occurrence of each id

    def message(self, party: str, path: str = "") -> str:
        src = f" ({path})" if path else ""
        return (f"{party}{src}: {self.duplicated_ids} id(s) occur more than once "
                f"({self.extra_rows} extra row(s) of {self.rows})")


def dedup(ids: Sequence[str], party: str, path: str = "", policy: str = "error") -> tuple[np.ndarray, DuplicateReport | None]:
    """Row positions of the first occurrence of each id, and a report when there were duplicates.

    policy "error" raises PSIError naming the counts; "keep_first" keeps the first row of each id.
    """
    ids = list(ids)
    seen: dict[str, int] = {}
    keep = []
    for pos, i in enumerate(ids):
        if i not in seen:
            seen[i] = pos
            keep.append(pos)
    if len(keep) == len(ids):
        return np.arange(len(ids), dtype=np.int64), None
    counts = Counter(ids)
    rep = DuplicateReport(len(ids), len(keep), sum(1 for c in counts.values() if c > 1), len(ids) - len(keep))
    if policy == "error":
        raise PSIError(rep.message(party, path) + "; fix the file or set vertical.duplicates=keep_first")
    return np.asarray(keep, dtype=np.int64), rep


@dataclass
class BusinessPSI:
    """The business party's side: blinds its ids, matches each provider, fixes the common order."""

    ids: Sequence[str]
    key: BlindingKey = field(default_factory=BlindingKey)

    def __post_init__(self) -> None:
        self.single = self.key.blind_ids(self.ids)  # A, sent to every provider
        self._double: dict[str, list[bytes]] = {}  # provider -> Ab (aligned with self.ids)
        self._theirs: dict[str, dict[bytes, int]] = {}  # provider -> Bba -> provider position
        self.provider_sizes: dict[str, int] = {}

    def receive(self, provider: str, their_single: Sequence[bytes]) -> None:
        """Blind a provider's blinded ids (Bb -> Bba). Runs while the provider re-blinds A."""
        self._theirs[provider] = {v: pos for pos, v in enumerate(self.key.blind(their_single))}
        self.provider_sizes[provider] = len(their_single)

    def match(self, provider: str, double_of_mine: Sequence[bytes]) -> int:
        """Record the provider's re-blinded A; returns the pairwise intersection size."""
        if provider not in self._theirs:
            raise PSIError(f"{provider}: match before its blinded ids were received")
        if len(double_of_mine) != len(self.ids):
            raise PSIError(f"{provider}: returned {len(double_of_mine)} blinded ids, expected {len(self.ids)}")
        self._double[provider] = list(double_of_mine)
        theirs = self._theirs[provider]
        return sum(1 for v in double_of_mine if v in theirs)

    def finish(self, min_size: int = 1) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(my row positions, {provider: its row positions}) of the common ids, identically ordered."""
        mine = []
        for i in range(len(self.ids)):
            if all(self._double[p][i] in self._theirs[p] for p in self._double):
                mine.append(i)
        mine.sort(key=lambda i: self.single[i])
        if len(mine) < min_size:
            sizes = ", ".join(f"{p} has {n} ids" for p, n in self.provider_sizes.items())
            raise PSIError(f"PSI: the business party has {len(self.ids)} ids, {sizes}; the intersection has "
                           f"{len(mine)} ids, need at least {min_size} (vertical.min_intersection)")
        if set(self._double) != set(self._theirs):
            raise PSIError(f"PSI incomplete: answers from {sorted(self._double)}, ids from {sorted(self._theirs)}")
        theirs = {p: np.asarray([self._theirs[p][self._double[p][i]] for i in mine], dtype=np.int64)
                  for p in self._double}
        return np.asarray(mine, dtype=np.int64), theirs


@dataclass
class ProviderPSI:
    """A provider's side: blinds its own ids and re-blinds the business party's points."""

    ids: Sequence[str]
    key: BlindingKey = field(default_factory=BlindingKey)

    def single(self) -> list[bytes]:
        return self.key.blind_ids(self.ids)

    def reblind(self, points: Sequence[bytes]) -> list[bytes]:
        return self.key.blind(points)


def intersect(business_ids: Sequence[str], provider_ids: dict[str, Sequence[str]], min_size: int = 1):
    """All PSI steps in one process (tests and benchmarks): same result as the party-by-party flow."""
    b = BusinessPSI(list(business_ids))
    for name, ids in provider_ids.items():
        p = ProviderPSI(list(ids))
        b.receive(name, p.single())
        b.match(name, p.reblind(b.single))
    return b.finish(min_size)
