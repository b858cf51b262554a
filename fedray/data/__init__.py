"""Data: MovieLens readers, synthetic generators, partitioning; Arrow tables in memory."""
from __future__ import annotations

from fedray.data.movielens import DataError, read_ratings
from fedray.data.partition import RecData, eval_negatives, leave_one_out
from fedray.data.synthetic import synthetic_ratings


def load_recdata(data_cfg, seed: int) -> RecData:
    """The recommendation data a config names: MovieLens from data.path, else the seeded synthetic set."""
    if data_cfg.path:
        table = read_ratings(data_cfg.path, data_cfg.format)
    else:
        s = data_cfg.synthetic
        table = synthetic_ratings(s.n_users, s.n_items, s.mean_interactions, s.latent_dim, s.popularity_skew, seed)
    try:
        return leave_one_out(table, data_cfg.min_interactions, data_cfg.max_users)
    except DataError as e:
        if data_cfg.path and str(data_cfg.path) not in str(e):  # name the file the unusable data came from
            raise DataError(f"{data_cfg.path}: {e}") from None
        raise


__all__ = ["DataError", "RecData", "eval_negatives", "leave_one_out", "load_recdata", "read_ratings", "synthetic_ratings"]
