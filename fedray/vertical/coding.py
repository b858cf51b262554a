"""Feature coding: every party's features get global integer codes; names stay with their party.

Only counts travel. The business party numbers its own features 0..f_b-1 and gives each
provider, in order, the next contiguous block. The resulting code set (party -> offset, count)
is shared with all parties; it reveals how many features each party has and nothing else.
The intercept, held by the business party, has the reserved code -1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INTERCEPT_CODE = -1


@dataclass(frozen=True)
class CodeBlock:
    party: str
    offset: int
    count: int

    def codes(self) -> np.ndarray:
        return np.arange(self.offset, self.offset + self.count, dtype=np.int64)


def assign_codes(counts: list[tuple[str, int]]) -> dict[str, CodeBlock]:
    """Contiguous code blocks in the given party order (business first)."""
    out: dict[str, CodeBlock] = {}
    offset = 0
    for party, n in counts:
        if party in out:
            raise ValueError(f"party {party!r} listed twice")
        if n < 0:
            raise ValueError(f"party {party!r}: negative feature count {n}")
        out[party] = CodeBlock(party, offset, int(n))
        offset += int(n)
    return out


@dataclass
class LocalFeatureMap:
    """A party's private map between its feature names and its global codes. Never sent."""

    names: list[str]
    block: CodeBlock

    def __post_init__(self) -> None:
        if len(self.names) != self.block.count:
            raise ValueError(f"{self.block.party}: {len(self.names)} names for {self.block.count} codes")

    def code(self, name: str) -> int:
        return self.block.offset + self.names.index(name)

    def name(self, code: int) -> str:
        return self.names[code - self.block.offset]
