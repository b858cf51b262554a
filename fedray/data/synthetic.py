"""Seeded synthetic implicit-feedback data with popularity skew and latent user/item structure."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from fedray.data.movielens import RATINGS_SCHEMA
from fedray.engine.streams import Stream, stream


def synthetic_ratings(users: int, items: int, mean_interactions: int, latent_dim: int,
                      popularity_skew: float, seed: int) -> pa.Table:
    """Ratings table in the MovieLens schema: each user picks items by popularity x latent affinity (Gumbel top-k)."""
    rng = stream(seed, Stream.SYNTHETIC)
    item_vec = rng.normal(0.0, 1.0, (items, latent_dim)).astype(np.float32)
    popularity = -popularity_skew * np.log(np.arange(1, items + 1, dtype=np.float32))
    popularity = popularity[rng.permutation(items)]
    user_vec = rng.normal(0.0, 1.0, (users, latent_dim)).astype(np.float32)
    logits = popularity[None, :] + 1.5 * (user_vec @ item_vec.T) / np.sqrt(latent_dim)
    gumbel = -np.log(-np.log(rng.random((users, items), dtype=np.float32) + 1e-12) + 1e-12)
    order = np.argsort(-(logits + gumbel), axis=1)
    counts = np.clip(rng.geometric(1.0 / mean_interactions, users), 3, max(3, items // 2))  # leave unseen items to rank
    keep = np.arange(items)[None, :] < counts[:, None]
    rows, ranks = np.nonzero(keep)
    chosen = order[rows, ranks]
    timestamps = 1_000_000 + rng.permutation(rows.size)  # a random order of events per user
    return pa.table({
        "user": rows.astype(np.int64),
        "item": chosen.astype(np.int64),
        "rating": np.ones(rows.size, np.float32),
        "timestamp": timestamps.astype(np.int64),
    }, schema=RATINGS_SCHEMA)
