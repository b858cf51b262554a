"""Per-coordinate optimizers each party applies to its own weights only (no Ray, no TenSEAL).

All three are separable, so a party stepping its own block of weights with its own block of the
gradient gives exactly the step the same optimizer would take on the pooled weight vector:

* ``sgd``: heavy-ball momentum ``v = momentum * v + g; w -= lr * v`` (plain SGD at momentum 0);
* ``nesterov``: ``v = momentum * v + g; w -= lr * (g + momentum * v)`` (PyTorch's form);
* ``adam``: bias-corrected first and second moments (beta1 0.9, beta2 0.999, eps 1e-8).

L2 is added to the gradient (coupled), never on the intercept (``penalize`` masks it out).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from fedray.vertical.config import OPTIMIZERS
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
STATE_COLUMNS = ("code", "weight", "velocity", "second_moment", "steps")


class LocalOptimizer:
    """One party's weights and optimizer state; ``step`` takes that party's own gradient block."""

    def __init__(self, dim: int, kind: str, lr: float, l2: float, momentum: float) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer {kind!r}: allowed values are {', '.join(OPTIMIZERS)}")
        self.kind, self.lr, self.l2, self.momentum = kind, lr, l2, momentum
        self.w = np.zeros(dim)
        self.v = np.zeros(dim)  # momentum velocity (sgd, nesterov) or Adam's first moment
        self.s = np.zeros(dim)  # Adam's second moment
        self.steps = 0

    def step(self, grad: np.ndarray, penalize: Optional[np.ndarray] = None) -> None:
        """One update from the loss gradient ``grad``; L2 where ``penalize`` is 1 (everywhere if None)."""
        g = grad + self.l2 * (self.w if penalize is None else self.w * penalize)
        self.steps += 1
        if self.kind == "adam":
            self.v = ADAM_BETA1 * self.v + (1 - ADAM_BETA1) * g
            self.s = ADAM_BETA2 * self.s + (1 - ADAM_BETA2) * g * g
            m_hat = self.v / (1 - ADAM_BETA1 ** self.steps)
            s_hat = self.s / (1 - ADAM_BETA2 ** self.steps)
            self.w = self.w - self.lr * m_hat / (np.sqrt(s_hat) + ADAM_EPS)
            return
        self.v = self.momentum * self.v + g
        direction = g + self.momentum * self.v if self.kind == "nesterov" else self.v
        self.w = self.w - self.lr * direction


def state_table(codes: np.ndarray, opt: LocalOptimizer) -> pa.Table:
    """A party's own training state keyed by feature code (float64, exact; ``steps`` on every row)."""
    return pa.table({"code": pa.array(np.asarray(codes), pa.int64()), "weight": pa.array(opt.w, pa.float64()),
                     "velocity": pa.array(opt.v, pa.float64()), "second_moment": pa.array(opt.s, pa.float64()),
                     "steps": pa.array(np.full(len(opt.w), opt.steps), pa.int64())})


def load_state_table(party: str, codes: np.ndarray, opt: LocalOptimizer, table: pa.Table) -> int:
    """Set ``opt`` from a state table keyed by code. The table may hold more codes (a party's other
    workers' shards); every one of ``codes`` must be there exactly once. Returns how many were set."""
    missing_cols = set(STATE_COLUMNS) - set(table.column_names)
    if missing_cols:
        raise ValueError(f"{party}: checkpoint state lacks columns {sorted(missing_cols)}")
    have = np.asarray(table.column("code").to_numpy(), dtype=np.int64)
    if len(np.unique(have)) != len(have):
        raise ValueError(f"{party}: checkpoint state repeats feature codes")
    order = np.argsort(have)
    codes = np.asarray(codes, dtype=np.int64)
    at = np.searchsorted(have[order], codes)
    found = (at < len(have)) & (have[order][np.minimum(at, len(have) - 1)] == codes)
    if not found.all():
        absent = codes[~found].tolist()
        raise ValueError(f"{party}: checkpoint state has no weights for feature codes {absent[:5]}"
                         f"{' ...' if len(absent) > 5 else ''} (it holds {len(have)} codes)")
    rows = order[at]
    opt.w = table.column("weight").to_numpy()[rows].astype(np.float64)
    opt.v = table.column("velocity").to_numpy()[rows].astype(np.float64)
    opt.s = table.column("second_moment").to_numpy()[rows].astype(np.float64)
    steps = table.column("steps").to_numpy()[rows]
    opt.steps = int(steps[0]) if len(steps) else 0
    return len(rows)
