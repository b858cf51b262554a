"""Implicit-feedback data partitioned by user: leave-one-out split and sampled evaluation negatives."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fedray.data.movielens import DataError
from fedray.data.synthetic import SyntheticUsers
from fedray.engine.streams import Stream, stream


@dataclass
class RecData:
    """Per-user training positives (CSR), one held-out item per user, and the raw ids behind the indices."""

    indptr: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int32 train positives, grouped by user
    test_items: np.ndarray  # int32 [n_users]
    user_ids: np.ndarray  # raw user id of each user index
    item_ids: np.ndarray  # raw item id of each item index

    @property
    def n_users(self) -> int:
        return len(self.test_items)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def positives(self, user: int) -> np.ndarray:
        """Training positives of one user."""
        return self.items[self.indptr[user]:self.indptr[user + 1]]

    def counts(self) -> np.ndarray:
        """Training positives per user (the device's sample count)."""
        return np.diff(self.indptr)

    def holdout(self, user: int) -> tuple[np.ndarray, int]:
        """One user's training positives and held-out item."""
        return self.positives(user), int(self.test_items[user])


def leave_one_out(table: pa.Table, min_interactions: int = 3, max_users: int | None = None) -> RecData:
    """Every rating is a positive; each user's latest one is held out for evaluation (ties broken by item)."""
    user_raw = table.column("user").to_numpy()
    item_raw = table.column("item").to_numpy()
    ts = table.column("timestamp").to_numpy()
    pairs = np.unique(np.stack([user_raw, item_raw]), axis=1)  # repeated (user, item) ratings count once
    if pairs.shape[1] != len(user_raw):
        keep = np.unique(np.stack([user_raw, item_raw]), axis=1, return_index=True)[1]
        user_raw, item_raw, ts = user_raw[keep], item_raw[keep], ts[keep]
    user_ids, users = np.unique(user_raw, return_inverse=True)
    counts = np.bincount(users, minlength=len(user_ids))
    kept_users = np.flatnonzero(counts >= min_interactions)
    if max_users is not None:
        kept_users = kept_users[:max_users]
    if len(kept_users) == 0:
        raise DataError(f"no user has at least {min_interactions} interactions (data.min_interactions)")
    mask = np.isin(users, kept_users)
    users, item_raw, ts = users[mask], item_raw[mask], ts[mask]
    user_ids = user_ids[kept_users]
    users = np.searchsorted(kept_users, users)
    item_ids, items = np.unique(item_raw, return_inverse=True)
    order = np.lexsort((items, ts, users))
    users, items = users[order], items[order].astype(np.int32)
    ends = np.cumsum(np.bincount(users, minlength=len(user_ids)))
    test_pos = ends - 1
    is_test = np.zeros(len(users), bool)
    is_test[test_pos] = True
    train_counts = np.bincount(users[~is_test], minlength=len(user_ids))
    indptr = np.concatenate([[0], np.cumsum(train_counts)]).astype(np.int64)
    return RecData(indptr=indptr, items=items[~is_test], test_items=items[test_pos], user_ids=user_ids, item_ids=item_ids)


def eval_negatives(data: RecData | SyntheticUsers, users: np.ndarray, n_neg: int, seed: int) -> np.ndarray:
    """For each user, n_neg distinct items it never interacted with, from a generator seeded by (seed, user)."""
    out = np.empty((len(users), n_neg), np.int32)
    for row, u in enumerate(users):
        positives, test_item = data.holdout(int(u))
        seen = np.append(positives, test_item)
        free = data.n_items - len(np.unique(seen))
        if free < n_neg:
            raise DataError(f"user {data.user_ids[u]}: only {free} unseen items for {n_neg} evaluation negatives")
        rng = stream(seed, Stream.EVAL_NEGATIVES, int(u))
        picked = np.empty(0, np.int32)
        while len(picked) < n_neg:
            cand = rng.integers(0, data.n_items, 2 * n_neg, dtype=np.int32)
            cand = cand[~np.isin(cand, seen)]
            picked = np.concatenate([picked, cand])
            picked = picked[np.sort(np.unique(picked, return_index=True)[1])]
        out[row] = picked[:n_neg]
    return out


def check_negatives(data: RecData | SyntheticUsers, n_neg: int) -> None:
    """Fail before any actor starts when some user has fewer unseen items than evaluation negatives."""
    free = data.n_items - (data.counts() + 1)
    short = np.flatnonzero(free < n_neg)
    if len(short):
        u = int(short[0])
        raise DataError(f"user {data.user_ids[u]}: only {int(free[u])} unseen items of {data.n_items} for "
                        f"{n_neg} evaluation negatives ({len(short)} users short; lower data.eval_negatives)")


def materialize(data: RecData | SyntheticUsers) -> RecData:
    """Every user's interactions in memory (CSR): what pooled training needs; lazy synthetic users are drawn here."""
    if isinstance(data, RecData):
        return data
    held = [data.holdout(u) for u in range(data.n_users)]
    counts = np.array([len(p) for p, _ in held], np.int64)
    return RecData(indptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   items=np.concatenate([p for p, _ in held]).astype(np.int32),
                   test_items=np.array([t for _, t in held], np.int32), user_ids=data.user_ids, item_ids=data.item_ids)
