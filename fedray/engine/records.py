"""Typed per-round records and their Parquet table: one record per group and round."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa


@dataclass
class RoundRecord:
    """What one group's round did: who took part, what was rejected or lost, traffic, loss, time and metrics."""

    round: int
    group: int
    selected: int = 0
    participants: int = 0  # updates fused into the global model
    stragglers: int = 0  # arrived after the first K or the deadline, or never answered in time
    failures: int = 0  # lost to crashed hosts or raising devices
    rejected: int = 0  # failed admission or decoding
    reject_reasons: str = "{}"  # JSON: reason -> count
    clipped: int = 0  # updates scaled down to train.clip_update_norm
    applied: bool = False  # whether the global model moved this round
    retries: int = 0
    restarts: int = 0  # device hosts Ray restarted after this round's crashes
    bytes_up: float = 0.0
    bytes_down: float = 0.0
    bytes_up_float32: float = 0.0  # what the same updates would cost as float32
    bits_per_element: float = 0.0  # of the accepted updates
    train_loss: float = math.nan
    sim_round_s: float = 0.0
    sim_time_s: float = 0.0
    wall_s: float = 0.0
    epsilon: float = math.nan  # DP: epsilon spent by the group so far, at privacy.delta (NaN without DP)
    noise_multiplier: float = 0.0  # DP: z of this round's release (0: no noise released)
    sampling_rate: float = 0.0  # DP: q, each live device's probability of taking part in this round
    metrics: dict[str, float] = field(default_factory=dict)  # the task's metrics (server ones prefixed server_)

    def absorb(self, earlier: "RoundRecord") -> None:
        """Add the counts and traffic of an earlier attempt at the same round (a retry)."""
        for name in ("selected", "failures", "rejected", "stragglers", "bytes_up", "bytes_down", "bytes_up_float32"):
            setattr(self, name, getattr(self, name) + getattr(earlier, name))


COLUMNS = [f.name for f in fields(RoundRecord) if f.name != "metrics"]


def records_table(records: list[RoundRecord]) -> pa.Table:
    """metrics.parquet's table: the record fields, then one column per metric (NaN where not evaluated)."""
    names = sorted({name for r in records for name in r.metrics})
    rows = []
    for r in records:
        row = asdict(r)
        metrics = row.pop("metrics")
        row.update({name: float(metrics.get(name, math.nan)) for name in names})
        rows.append(row)
    if not rows:
        return pa.table({"round": pa.array([], pa.int64())})
    return pa.Table.from_pylist(rows)


def records_from_table(table: pa.Table) -> list[RoundRecord]:
    """Records back from metrics.parquet (a checkpoint's copy on resume)."""
    out = []
    for row in table.to_pylist():
        if "group" not in row:
            continue
        base = {name: row.pop(name) for name in COLUMNS if name in row}
        out.append(RoundRecord(**base, metrics={k: float(v) for k, v in row.items() if v is not None}))
    return out
