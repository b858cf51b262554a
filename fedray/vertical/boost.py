"""Gradient-boosted trees for SecureBoost, the plaintext maths (no Ray, no TenSEAL).

* ``QuantileBins``: a party's own bins of its own columns, fitted on its training rows: up to
  ``bins`` quantile bins per column (edges are the column's quantiles) plus one bin for missing
  cells (NaN), always at index ``bins``. A value x falls in bin ``searchsorted(edges, x, "right")``,
  so "bin <= b" is the same test as "x < edges[b]": a split's threshold is a raw value that stays
  with the party owning the column.
* ``histograms``: per column and bin, the sums of g and h over some rows (the business party's own
  columns in the clear; providers' columns come back from CKKS, see ``fedray.vertical.ckks``).
* ``best_split``: XGBoost's gain ½[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] over every column,
  threshold bin and both directions for the missing bin (the learned default direction), with
  H_L, H_R >= min_child_weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class QuantileBins:
    """Per-column bin edges (raw values) and the number of value bins; bin ``bins`` holds missing cells."""

    edges: list[np.ndarray]
    bins: int

    @classmethod
    def fit(cls, X: np.ndarray, bins: int) -> "QuantileBins":
        """Quantile edges of each column over its non-missing training cells (fewer when values repeat)."""
        qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        edges = []
        for col in np.asarray(X, dtype=np.float64).T:
            present = col[~np.isnan(col)]
            if present.size == 0:
                edges.append(np.empty(0))
                continue
            cut = np.unique(np.quantile(present, qs, method="linear"))
            edges.append(cut[cut > present.min()])  # an edge at the minimum would leave bin 0 empty
        return cls(edges, bins)

    def codes(self, X: np.ndarray) -> np.ndarray:
        """Bin index of every cell, int16 (m, columns); missing cells get ``bins``."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty(X.shape, dtype=np.int16)
        for j, cut in enumerate(self.edges):
            col = X[:, j]
            out[:, j] = np.searchsorted(cut, col, side="right")
            out[np.isnan(col), j] = self.bins
        return out

    def threshold(self, column: int, bin_: int) -> float:
        """The raw value t with "bin <= bin_" equal to "x < t" (inf when every value bin is at or below bin_)."""
        cut = self.edges[column]
        return float(cut[bin_]) if bin_ < len(cut) else float("inf")


def histograms(codes: np.ndarray, g: np.ndarray, h: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(G, H), each (columns, bins + 1): sums of g and h per column and bin over the given rows."""
    m, f = codes.shape
    flat = (codes.astype(np.int64) + np.arange(f, dtype=np.int64) * (bins + 1)).ravel()
    size = f * (bins + 1)
    G = np.bincount(flat, weights=np.repeat(g, f), minlength=size).reshape(f, bins + 1)
    H = np.bincount(flat, weights=np.repeat(h, f), minlength=size).reshape(f, bins + 1)
    return G, H


@dataclass(frozen=True)
class Split:
    """The best split of one party's columns for a node: go left when bin <= ``bin``; missing cells
    go left when ``missing_left``."""

    gain: float
    column: int
    bin: int
    missing_left: bool


GAIN_TOLERANCE = 1e-3  # gains closer than this are ties: CKKS noise in bin sums (~1e-5) must not decide


def best_split(G: np.ndarray, H: np.ndarray, l2: float, min_child_weight: float) -> Optional[Split]:
    """The highest-gain split over all columns, thresholds and missing directions; None if none gains
    more than GAIN_TOLERANCE. Candidates within GAIN_TOLERANCE of the best are ties, broken by the
    lowest column, then missing cells right, then the lowest bin, so that the noise of encrypted bin
    sums cannot change which of several equally good splits (e.g. the same row partition) is taken."""
    if G.size == 0 or G.shape[1] < 3:
        return None
    value_G, value_H = G[:, :-1], H[:, :-1]
    miss_G, miss_H = G[:, -1:], H[:, -1:]
    total_G, total_H = G.sum(axis=1, keepdims=True), H.sum(axis=1, keepdims=True)
    left_G, left_H = np.cumsum(value_G, axis=1)[:, :-1], np.cumsum(value_H, axis=1)[:, :-1]
    parent = total_G ** 2 / (total_H + l2)
    gains = []
    for missing_left in (False, True):
        lg = left_G + (miss_G if missing_left else 0.0)
        lh = left_H + (miss_H if missing_left else 0.0)
        rg, rh = total_G - lg, total_H - lh
        gain = 0.5 * (lg ** 2 / (lh + l2) + rg ** 2 / (rh + l2) - parent)
        gains.append(np.where((lh >= min_child_weight) & (rh >= min_child_weight), gain, -np.inf))
    gain = np.stack(gains, axis=1)  # (columns, missing direction, bins)
    top = float(gain.max())
    if not np.isfinite(top) or top <= GAIN_TOLERANCE:
        return None
    column, missing_left, bin_ = (int(i[0]) for i in np.nonzero(gain >= top - GAIN_TOLERANCE))
    return Split(float(gain[column, missing_left, bin_]), column, bin_, bool(missing_left))


def leaf_weight(G: float, H: float, l2: float) -> float:
    """The Newton step -G / (H + λ) of a leaf."""
    return -G / (H + l2)
