"""Hardware-tier grouping of client devices from their *reported* hardware profiles.

A profile is one row of a float64 array whose columns are ``HW_FIELDS``. All fields are
"higher is better" (more cores, more memory, more GFLOP/s, more bandwidth, more often
online), so "fastest group" and "highest gflops" agree for the default field.

Everything here is pure numpy and deterministic given the ``np.random.Generator`` passed in.
Python loops run only over groups, k-means iterations or restarts, never over devices.

Group labels are always ordered so that label 0 is the fastest group (highest mean gflops),
which lets the config say "group 0 gets width 1.0" without knowing how devices were grouped.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

HW_FIELDS: tuple[str, ...] = ("cores", "memory_gb", "gflops", "up_mbps", "down_mbps", "availability")
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(HW_FIELDS)}

_TINY = 1e-12  # floor before taking logs; reported values are positive in practice


def _field(name: str) -> int:
    """Column index of a hardware field; ValueError listing the known fields."""
    try:
        return FIELD_INDEX[name]
    except KeyError:
        raise ValueError(f"unknown hardware field {name!r}; known fields: {', '.join(HW_FIELDS)}") from None


def _check_profiles(profiles: np.ndarray) -> np.ndarray:
    """Profiles as float64 [n, len(HW_FIELDS)], all finite."""
    p = np.asarray(profiles, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(HW_FIELDS):
        raise ValueError(f"profiles must have shape [n, {len(HW_FIELDS)}] (columns {HW_FIELDS}), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("profiles contain non-finite values")
    return p


def _log_scale(profiles: np.ndarray) -> np.ndarray:
    """Log-scale every column and centre it (mean 0); no division by the column's spread.

    In log space a 2x difference weighs the same in every field, and tiers differ by ratios. Dividing
    each column by its std would instead give a field that carries only per-device noise (say every tier
    reports the same memory) as much weight as gflops, and k-means would then split tiers on that noise.
    """
    x = np.log(np.maximum(profiles, _TINY))
    if len(x) == 0:
        return x
    return x - x.mean(axis=0)


def _sq_dists(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [n, k] between points and centers."""
    d = z[:, None, :] - centers[None, :, :]
    return np.einsum("nkd,nkd->nk", d, d)


def _order_by_gflops(labels: np.ndarray, profiles: np.ndarray) -> np.ndarray:
    """Relabel the groups present to 0..G-1 so that 0 has the highest mean gflops (ties: lower old label first)."""
    present, inverse = np.unique(labels, return_inverse=True)
    if len(present) == 0:
        return labels.astype(np.int64)
    g = profiles[:, FIELD_INDEX["gflops"]]
    mean = np.bincount(inverse, weights=g, minlength=len(present)) / np.bincount(inverse, minlength=len(present))
    order = np.argsort(-mean, kind="stable")  # order[new] = old position
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse].astype(np.int64)


def draw_profiles(
    tier_means: Sequence[Mapping[str, float]],
    shares: Sequence[float],
    n: int,
    rng: np.random.Generator,
    spread: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated device hardware: returns (profiles float64 [n, len(HW_FIELDS)], tier index int [n]) drawn around each tier's values (lognormal multiplicative noise with sigma=spread; availability clipped to (0,1], cores rounded >=1).

    Tier sizes follow ``shares`` exactly up to rounding (largest remainder), and devices are
    shuffled so tier membership is not tied to the device index. Keys of ``tier_means`` other
    than ``HW_FIELDS`` (name, width, latency_ms, ...) are ignored. The tier's value is the
    median of the drawn values.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if spread < 0 or not np.isfinite(spread):
        raise ValueError(f"spread must be finite and >= 0, got {spread}")
    t = len(tier_means)
    if t == 0 or len(shares) != t:
        raise ValueError(f"need one share per tier and at least one tier: {t} tiers, {len(shares)} shares")
    missing = [(i, f) for i, m in enumerate(tier_means) for f in HW_FIELDS if f not in m]
    if missing:
        raise ValueError(f"tier hardware fields missing (tier index, field): {missing}")
    means = np.array([[float(m[f]) for f in HW_FIELDS] for m in tier_means], dtype=np.float64)
    if not np.all(np.isfinite(means)) or np.any(means <= 0):
        raise ValueError("tier hardware values must be finite and > 0")
    w = np.asarray(shares, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"shares must be finite, >= 0 and not all zero, got {list(shares)}")
    w = w / w.sum()

    # Largest-remainder apportionment: exact counts, deterministic.
    raw = w * n
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    tiers = rng.permutation(np.repeat(np.arange(t, dtype=np.int64), counts))

    noise = rng.lognormal(mean=0.0, sigma=spread, size=(n, len(HW_FIELDS)))
    profiles = means[tiers] * noise
    c = FIELD_INDEX["cores"]
    profiles[:, c] = np.maximum(1.0, np.rint(profiles[:, c]))
    a = FIELD_INDEX["availability"]
    profiles[:, a] = np.clip(profiles[:, a], np.finfo(np.float64).tiny, 1.0)
    return profiles, tiers


def group_by_thresholds(profiles: np.ndarray, thresholds: Sequence[float], field: str = "gflops") -> np.ndarray:
    """Group label per device from ascending thresholds on one reported field (label 0 = fastest group).

    With thresholds ``t_0 < ... < t_{m-1}`` there are m+1 labels: value >= t_{m-1} -> 0,
    t_{m-2} <= value < t_{m-1} -> 1, ..., value < t_0 -> m. A value exactly on a threshold
    belongs to the faster group. Labels may be empty; ``merge_small_groups`` compacts them.
    """
    p = _check_profiles(profiles)
    th = np.asarray(thresholds, dtype=np.float64)
    if th.ndim != 1 or not np.all(np.isfinite(th)):
        raise ValueError(f"thresholds must be a flat list of finite numbers, got {thresholds!r}")
    if np.any(np.diff(th) <= 0):
        raise ValueError(f"thresholds must be strictly ascending, got {list(th)}")
    v = p[:, _field(field)]
    return (len(th) - np.searchsorted(th, v, side="right")).astype(np.int64)


def _kmeans_once(z: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> tuple[np.ndarray, float]:
    """One k-means++-initialised Lloyd run; returns (labels, inertia)."""
    n = len(z)
    centers = np.empty((k, z.shape[1]), dtype=np.float64)
    centers[0] = z[rng.integers(n)]
    d2 = _sq_dists(z, centers[:1])[:, 0]
    for j in range(1, k):
        total = d2.sum()
        idx = rng.integers(n) if total <= 0 else rng.choice(n, p=d2 / total)
        centers[j] = z[idx]
        d2 = np.minimum(d2, _sq_dists(z, centers[j : j + 1])[:, 0])

    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(max(1, iters)):
        dist = _sq_dists(z, centers)
        new = np.argmin(dist, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        for j in range(k):
            if counts[j]:
                centers[j] = z[labels == j].mean(axis=0)
            else:
                # Empty cluster: restart it at the point worst served by its current center.
                far = int(np.argmax(dist[np.arange(n), labels]))
                centers[j] = z[far]
                labels[far] = j
                dist[far] = 0.0
    inertia = float(_sq_dists(z, centers)[np.arange(n), labels].sum())
    return labels, inertia


def group_kmeans(
    profiles: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50, *, n_init: int = 4
) -> np.ndarray:
    """k-means (k-means++ init) on log-scaled profiles; labels ordered so 0 = highest mean gflops.

    Runs ``n_init`` restarts and keeps the one with the lowest inertia (first on ties). Log
    scale because hardware spans orders of magnitude (5 vs 200 GFLOP/s) and ratios, not
    differences, separate tiers. Fewer than k groups can come back only when the data has
    fewer than k distinct profiles.
    """
    p = _check_profiles(profiles)
    n = len(p)
    if not 1 <= k <= max(n, 1):
        raise ValueError(f"k must be in 1..n_devices ({n}), got {k}")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    z = _log_scale(p)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        labels, inertia = _kmeans_once(z, k, rng, iters)
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return _order_by_gflops(best, p)


def merge_small_groups(
    labels: np.ndarray, profiles: np.ndarray, min_size: int = 3
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Merge groups smaller than min_size into the nearest group (centroid distance in the same log-scaled space); relabel 0..G-1 keeping order by gflops; returns (labels, [(from_group, into_group), ...]) so the run log can say so.

    Merges happen one at a time, smallest group first (ties: lower label), and centroids are
    recomputed after each merge. The pairs use the *input* labels (a group absorbed earlier
    keeps the label of the group it joined). Merging stops when one group is left, even if
    it is still smaller than ``min_size``.
    """
    p = _check_profiles(profiles)
    lab = np.asarray(labels)
    if lab.shape != (len(p),):
        raise ValueError(f"labels must have shape ({len(p)},), got {lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    lab = lab.astype(np.int64, copy=True)
    z = _log_scale(p)
    merges: list[tuple[int, int]] = []
    while True:
        groups, inverse, sizes = np.unique(lab, return_inverse=True, return_counts=True)
        if len(groups) <= 1:
            break
        small = np.flatnonzero(sizes < min_size)
        if len(small) == 0:
            break
        src = small[np.argsort(sizes[small], kind="stable")[0]]
        cent = np.stack([np.bincount(inverse, weights=z[:, d], minlength=len(groups)) for d in range(z.shape[1])], 1)
        cent /= sizes[:, None]
        dist = np.sum((cent - cent[src]) ** 2, axis=1)
        dist[src] = np.inf
        dst = int(np.argmin(dist))
        frm, into = int(groups[src]), int(groups[dst])
        lab[lab == frm] = into
        merges.append((frm, into))
    return _order_by_gflops(lab, p), merges


def group_devices(
    profiles: np.ndarray,
    method: str,
    *,
    thresholds: Sequence[float] | None = None,
    k: int | None = None,
    rng: np.random.Generator | None = None,
    min_size: int = 3,
    field: str = "gflops",
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Dispatch 'thresholds' | 'kmeans' then merge small groups; ValueError naming the method if unknown."""
    if method == "thresholds":
        if thresholds is None:
            raise ValueError("grouping method 'thresholds' needs thresholds=[...]")
        labels = group_by_thresholds(profiles, thresholds, field=field)
    elif method == "kmeans":
        if k is None or rng is None:
            raise ValueError("grouping method 'kmeans' needs k=... and rng=np.random.Generator")
        labels = group_kmeans(profiles, k, rng)
    else:
        raise ValueError(f"unknown grouping method {method!r}; expected 'thresholds' or 'kmeans'")
    return merge_small_groups(labels, profiles, min_size=min_size)
