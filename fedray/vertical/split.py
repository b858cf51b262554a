"""Train/validation split of the aligned ids, and early stopping on the validation loss (pure).

Every party computes the split alone from the ids it holds after PSI: an id is a validation row
when the first 8 bytes of SHA-256(seed, id), read as a fraction of 2^64, fall below the
fraction. Parties hold the same aligned ids, so they agree without sending anything, and the
split of an id does not depend on which other ids are in the intersection.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DOMAIN = b"fedray/vertical/split/v1\x00"


def validation_mask(ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask, True for the ids in the validation part (about ``fraction`` of them)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction {fraction!r}: must be >= 0 and < 1")
    prefix = DOMAIN + str(int(seed)).encode() + b"\x00"
    digests = b"".join(hashlib.sha256(prefix + str(i).encode("utf-8")).digest()[:8] for i in ids)
    draws = np.frombuffer(digests, dtype=">u8").astype(np.float64) * 2.0 ** -64
    return draws < fraction


def train_first_order(ids: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """(a permutation putting training rows first, then validation rows, each in aligned order; training count)."""
    val = validation_mask(ids, fraction, seed)
    order = np.r_[np.flatnonzero(~val), np.flatnonzero(val)].astype(np.int64)
    return order, int((~val).sum())


@dataclass
class EarlyStopping:
    """Stop once the validation loss has not improved by more than ``tolerance`` for ``patience``
    iterations in a row (``patience`` 0: never stop)."""

    patience: int = 0
    tolerance: float = 0.0
    best: float = math.inf
    best_iteration: int = 0
    waited: int = 0

    def update(self, iteration: int, val_loss: float) -> bool:
        """Record one iteration's validation loss (NaN: no validation rows, ignored); True when training should stop."""
        if math.isnan(val_loss):
            return False
        if val_loss < self.best - self.tolerance:
            self.best, self.best_iteration, self.waited = val_loss, iteration, 0
        else:
            self.waited += 1
        return self.patience > 0 and self.waited >= self.patience
