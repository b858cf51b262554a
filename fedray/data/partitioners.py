"""Which rows belong to which device: seeded horizontal partitioners over a table's rows (pure numpy).

Every partitioner returns one sorted int64 array of row indices per device; together they cover every
row exactly once. Randomness comes only from the ``np.random.Generator`` passed in, so a seed fixes
the partition.

- ``iid``: a random permutation cut into near-equal pieces;
- ``dirichlet``: label skew; each class's rows are spread over devices in proportions drawn from
  Dirichlet(alpha) (small alpha: each device holds few classes), then rebalanced so no device has
  fewer than ``min_rows`` rows;
- ``natural``: one device per distinct value of an id column (a user, a branch), in sorted id order;
- ``size``: quantity skew; device sizes proportional to lognormal(0, sigma) draws, every device >= 1 row.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

METHODS = ("iid", "dirichlet", "natural", "size")


def _check_devices(n_rows: int, n_devices: int, min_rows: int = 1) -> None:
    """Fail unless n_devices >= 1 and every device can get min_rows of the n_rows rows."""
    if n_devices < 1:
        raise ValueError(f"devices must be >= 1, got {n_devices}")
    if min_rows < 1:
        raise ValueError(f"min_rows must be >= 1, got {min_rows}")
    if n_rows < n_devices * min_rows:
        raise ValueError(f"{n_rows} rows cannot give {n_devices} devices {min_rows} row(s) each "
                         f"(needs {n_devices * min_rows}); use fewer devices or a smaller min_rows")


def _split_by_counts(rows: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Cut `rows` into consecutive pieces of the given sizes, each sorted as int64."""
    return [np.sort(piece).astype(np.int64) for piece in np.split(rows, np.cumsum(counts)[:-1])]


def iid(n_rows: int, n_devices: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Rows shuffled and cut into n_devices pieces whose sizes differ by at most one."""
    _check_devices(n_rows, n_devices)
    base, extra = divmod(n_rows, n_devices)
    counts = np.full(n_devices, base, np.int64)
    counts[:extra] += 1
    return _split_by_counts(rng.permutation(n_rows), counts)


def _rebalance(counts: np.ndarray, min_rows: int) -> None:
    """Move rows (in place, class by class) from the largest devices to those under min_rows; counts is [classes, devices]."""
    totals = counts.sum(axis=0)
    for device in np.flatnonzero(totals < min_rows):
        while totals[device] < min_rows:
            donor = int(np.argmax(totals))
            cls = int(np.argmax(counts[:, donor]))  # the donor's biggest class: keeps its own mix least disturbed
            give = int(min(min_rows - totals[device], totals[donor] - min_rows, counts[cls, donor]))
            counts[cls, donor] -= give
            counts[cls, device] += give
            totals[donor] -= give
            totals[device] += give


def dirichlet(labels: np.ndarray, n_devices: int, alpha: float, rng: np.random.Generator,
              min_rows: int = 1) -> list[np.ndarray]:
    """Label skew: per class, device shares ~ Dirichlet(alpha); short devices then take rows from the largest ones."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha}")
    _check_devices(len(labels), n_devices, min_rows)
    classes, inverse = np.unique(labels, return_inverse=True)
    per_class = np.bincount(inverse, minlength=len(classes))
    shares = rng.dirichlet(np.full(n_devices, float(alpha)), size=len(classes))
    counts = np.stack([rng.multinomial(n, p) for n, p in zip(per_class, shares)])  # [classes, devices]
    _rebalance(counts, min_rows)
    shuffled = rng.permutation(len(labels))
    by_class = shuffled[np.argsort(inverse[shuffled], kind="stable")]  # rows grouped by class, random within
    # Rows of class c fill devices in order: device d takes the next counts[c, d] rows of class c.
    owner = np.repeat(np.tile(np.arange(n_devices), len(classes)), counts.reshape(-1))
    order = np.argsort(owner, kind="stable")
    return _split_by_counts(by_class[order], counts.sum(axis=0))


def natural(ids: np.ndarray) -> list[np.ndarray]:
    """One device per distinct id (a user, a branch), devices in sorted id order."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError(f"ids must be a non-empty one-dimensional array, got shape {ids.shape}")
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return _split_by_counts(np.argsort(inverse, kind="stable"), counts)


def size(n_rows: int, n_devices: int, rng: np.random.Generator, sigma: float = 1.0) -> list[np.ndarray]:
    """Quantity skew: device sizes proportional to lognormal(0, sigma) draws, every device at least one row."""
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a non-negative number, got {sigma}")
    _check_devices(n_rows, n_devices)
    weights = rng.lognormal(0.0, float(sigma), n_devices)
    counts = 1 + rng.multinomial(n_rows - n_devices, weights / weights.sum())
    return _split_by_counts(rng.permutation(n_rows), counts)


# method -> the keyword parameters it takes beyond the data and the generator
PARAMETERS = {"iid": (), "dirichlet": ("alpha", "min_rows"), "natural": (), "size": ("sigma",)}


def check_method(method: str, params: Mapping[str, Any]) -> None:
    """Fail, naming what is allowed, on an unknown method or a parameter the method does not take."""
    if method not in METHODS:
        raise ValueError(f"partition method {method!r} is unknown; allowed methods are {', '.join(METHODS)}")
    unknown = sorted(set(params) - set(PARAMETERS[method]))
    if unknown:
        allowed = ", ".join(PARAMETERS[method]) or "none"
        raise ValueError(f"partition {method!r} takes no parameter {', '.join(unknown)} (its parameters: {allowed})")


def partition(method: str, *, n_devices: int | None, rng: np.random.Generator, n_rows: int | None = None,
              labels: np.ndarray | None = None, ids: np.ndarray | None = None, **params: Any) -> list[np.ndarray]:
    """Dispatch to a partitioner by name; `labels` feed dirichlet, `ids` feed natural, params the method's own knobs."""
    check_method(method, params)
    if method == "natural":
        if ids is None:
            raise ValueError("partition 'natural' needs an id column to group rows by")
        parts = natural(ids)
        if n_devices is not None and n_devices != len(parts):
            raise ValueError(f"partition 'natural' found {len(parts)} distinct ids but devices is {n_devices}; "
                             "leave devices unset or make them agree")
        return parts
    if n_devices is None:
        raise ValueError(f"partition {method!r} needs the number of devices")
    if method == "dirichlet":
        if labels is None:
            raise ValueError("partition 'dirichlet' needs a label column")
        if "alpha" not in params:
            raise ValueError("partition 'dirichlet' needs alpha (the Dirichlet concentration, e.g. 0.5)")
        return dirichlet(labels, n_devices, rng=rng, **params)
    if n_rows is None:
        n_rows = len(labels) if labels is not None else len(ids) if ids is not None else None
    if n_rows is None:
        raise ValueError(f"partition {method!r} needs the number of rows")
    if method == "iid":
        return iid(n_rows, n_devices, rng)
    return size(n_rows, n_devices, rng, **params)
