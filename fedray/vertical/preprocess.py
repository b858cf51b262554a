"""Per-party column preparation: fill missing cells, then standardize (pure numpy).

Each party fits this on its own training rows only and keeps it with its weights, so scoring new
rows reuses the same fill values and scales. Missing cells arrive as NaN from the reader (only when
``vertical.missing`` is not ``error``). Fill: ``zero``, or the column's ``mean`` / ``median`` over
the non-missing training cells (0 for a column with none). Standardization then centres and scales
the filled column (a constant column keeps scale 1); with ``standardize`` off, centre 0 and scale 1.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fedray.vertical.config import MISSING
COLUMNS = ("fill", "center", "scale")


@dataclass
class ColumnPrep:
    """Per-column fill value, centre and scale: x -> (fill(x) - center) / scale."""

    fill: np.ndarray
    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, missing: str, standardize: bool) -> "ColumnPrep":
        """Fit on a party's own training rows (float64, NaN where a cell is missing)."""
        if missing not in MISSING:
            raise ValueError(f"missing={missing!r}: allowed values are {', '.join(MISSING)}")
        X = np.asarray(X, dtype=np.float64)
        f = X.shape[1]
        if missing in ("error", "zero"):
            fill = np.zeros(f)
        else:
            with warnings.catch_warnings():  # an all-missing column: nanmean warns, we fill 0
                warnings.simplefilter("ignore", RuntimeWarning)
                fill = np.nanmean(X, axis=0) if missing == "mean" else np.nanmedian(X, axis=0)
            fill = np.where(np.isfinite(fill), fill, 0.0)
        filled = np.where(np.isnan(X), fill, X)
        if standardize and len(X):
            center = filled.mean(axis=0)
            scale = filled.std(axis=0)
            scale = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(center)), scale, 1.0)
        else:
            center, scale = np.zeros(f), np.ones(f)
        return cls(fill, center, scale)

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Filled and standardized copy of X (same columns as at fit time)."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] != len(self.fill):
            raise ValueError(f"{X.shape[1]} columns, the preparation was fitted on {len(self.fill)}")
        return (np.where(np.isnan(X), self.fill, X) - self.center) / self.scale

    def columns(self) -> dict[str, pa.Array]:
        """The three per-column values as Arrow float64 arrays, for the party's model file."""
        return {name: pa.array(getattr(self, name), pa.float64()) for name in COLUMNS}

    @classmethod
    def from_table(cls, table: pa.Table) -> "ColumnPrep":
        return cls(*(np.asarray(table.column(name).to_numpy(), dtype=np.float64) for name in COLUMNS))
