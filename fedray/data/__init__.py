"""Data: MovieLens readers, synthetic generators, partitioning; Arrow tables in memory."""
from __future__ import annotations

from fedray.data.movielens import DataError, read_ratings
from fedray.data.partition import RecData, eval_negatives, leave_one_out, materialize
from fedray.data.synthetic import SyntheticUsers, synthetic_ratings, synthetic_users


def load_recdata(data_cfg, seed: int) -> RecData | SyntheticUsers:
    """The recommendation data a config names: MovieLens from data.path, else the seeded synthetic users (lazy:
    each user's items are drawn when first asked for)."""
    if not data_cfg.path:
        s = data_cfg.synthetic
        users = s.n_users if data_cfg.max_users is None else min(s.n_users, data_cfg.max_users)
        return synthetic_users(users, s.n_items, s.mean_interactions, s.latent_dim, s.popularity_skew, seed,
                               data_cfg.min_interactions)
    table = read_ratings(data_cfg.path, data_cfg.format)
    try:
        return leave_one_out(table, data_cfg.min_interactions, data_cfg.max_users)
    except DataError as e:
        if str(data_cfg.path) not in str(e):  # name the file the unusable data came from
            raise DataError(f"{data_cfg.path}: {e}") from None
        raise


__all__ = ["DataError", "RecData", "SyntheticUsers", "eval_negatives", "leave_one_out", "load_recdata", "materialize",
           "read_ratings", "synthetic_ratings", "synthetic_users"]
