"""Seeded synthetic implicit-feedback data with popularity skew and latent user/item structure, generated lazily.

Only the catalogue (item vectors, popularity) and one interaction count per user are drawn up front, as compact
arrays; a user's items are drawn from the user's own seed when first asked for, so a million registered users
cost a few megabytes and set-up stays O(users) in vectorised numpy, never O(users x items).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fedray.data.movielens import RATINGS_SCHEMA
from fedray.engine.streams import Stream, stream

AFFINITY = 1.5  # weight of the latent user-item affinity against item popularity


@dataclass(frozen=True)
class SyntheticUsers:
    """Users who pick items by popularity x latent affinity (Gumbel top-k); the same interface as RecData."""

    seed: int
    item_vec: np.ndarray  # float32 [n_items, latent_dim]
    popularity: np.ndarray  # float32 [n_items] log-popularity
    interactions: np.ndarray  # int32 [n_users]: each user's items, one of which is held out

    @property
    def n_users(self) -> int:
        return len(self.interactions)

    @property
    def n_items(self) -> int:
        return len(self.popularity)

    @property
    def user_ids(self) -> np.ndarray:
        """Raw user ids: the user indices themselves."""
        return np.arange(self.n_users)

    @property
    def item_ids(self) -> np.ndarray:
        """Raw item ids: the item indices themselves."""
        return np.arange(self.n_items)

    def counts(self) -> np.ndarray:
        """Training positives per user (the device's sample count)."""
        return self.interactions.astype(np.int64) - 1

    def holdout(self, user: int) -> tuple[np.ndarray, int]:
        """One user's training positives (sorted) and held-out item, drawn from the user's own seed."""
        if not 0 <= user < self.n_users:
            raise IndexError(f"user {user} is not among the {self.n_users} synthetic users")
        rng = stream(self.seed, Stream.SYNTHETIC_USER, user)
        user_vec = rng.normal(0.0, 1.0, self.item_vec.shape[1]).astype(np.float32)
        logits = self.popularity + AFFINITY * (self.item_vec @ user_vec) / np.float32(np.sqrt(len(user_vec)))
        gumbel = -np.log(-np.log(rng.random(self.n_items, dtype=np.float32) + 1e-12) + 1e-12)
        k = int(self.interactions[user])
        chosen = np.argpartition(-(logits + gumbel), k - 1)[:k]
        test = int(rng.integers(k))
        return np.sort(np.delete(chosen, test)).astype(np.int32), int(chosen[test])

    def positives(self, user: int) -> np.ndarray:
        """Training positives of one user."""
        return self.holdout(user)[0]


def synthetic_users(users: int, items: int, mean_interactions: int, latent_dim: int, popularity_skew: float,
                    seed: int, min_interactions: int = 3) -> SyntheticUsers:
    """The catalogue and each user's interaction count (geometric, at least min_interactions and 3, at most half
    the catalogue so unseen items are left to rank against)."""
    rng = stream(seed, Stream.SYNTHETIC)
    item_vec = rng.normal(0.0, 1.0, (items, latent_dim)).astype(np.float32)
    popularity = (-popularity_skew * np.log(np.arange(1, items + 1, dtype=np.float32)))[rng.permutation(items)]
    low = max(3, min_interactions)
    interactions = np.clip(rng.geometric(1.0 / mean_interactions, users), low, max(low, items // 2)).astype(np.int32)
    return SyntheticUsers(int(seed), item_vec, popularity.astype(np.float32), interactions)


def synthetic_ratings(users: int, items: int, mean_interactions: int, latent_dim: int,
                      popularity_skew: float, seed: int) -> pa.Table:
    """The synthetic users as a ratings table in the MovieLens schema; each user's held-out item rated last."""
    data = synthetic_users(users, items, mean_interactions, latent_dim, popularity_skew, seed)
    user_col, item_col, time_col = [], [], []
    for user in range(users):
        positives, test = data.holdout(user)
        picked = np.append(positives, test)
        user_col.append(np.full(len(picked), user, np.int64))
        item_col.append(picked.astype(np.int64))
        time_col.append(1_000_000 + np.arange(len(picked), dtype=np.int64))
    rows = int(sum(len(c) for c in item_col))
    return pa.table({"user": np.concatenate(user_col), "item": np.concatenate(item_col),
                     "rating": np.ones(rows, np.float32), "timestamp": np.concatenate(time_col)}, schema=RATINGS_SCHEMA)
