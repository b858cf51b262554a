"""Device-side recommendation from a finished run: the group's global model + the user's private vector -> top-k."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from fedray.checkpoint import table_to_arrays
from fedray.config import ConfigError, load_config, to_plain
from fedray.data import DataError
from fedray.engine.device_files import read_private_state
from fedray.engine.streams import Stream, stream
from fedray.tasks import build_task
from fedray.tasks.recommender import RecommenderTask


def recommend(run_dir: Path, user_id: int, k: int = 10) -> list[dict]:
    """Top-k unseen items for a user (raw id), ranked by the user's group model as its device would rank them."""
    cfg = load_config(run_dir / "config.yaml")
    task = build_task(to_plain(cfg)["task"])
    if not isinstance(task, RecommenderTask):
        raise ConfigError(f"{run_dir}: `fedray recommend` needs a run of the built-in recommender task")
    users = task.load(cfg.seed)
    idx = np.flatnonzero(users.user_ids == user_id)
    if len(idx) == 0:
        raise DataError(f"user {user_id} is not in the run's data ({cfg.data.path or 'synthetic'})")
    device = int(idx[0])
    grouping = pq.read_table(run_dir / "grouping.parquet").to_pydict()
    group = int(grouping["group"][grouping["device"].index(device)])
    width = json.loads((run_dir / "models" / "groups.json").read_text())[str(group)]["width"]
    model = task.model(width)
    state = {**table_to_arrays(pq.read_table(run_dir / "models" / f"group-{group}.parquet")),
             **read_private_state(run_dir, device)}
    model.load_state_dict({name: torch.from_numpy(np.asarray(v)) for name, v in state.items()}, strict=False)
    items, scores = task.recommend(model, users[device], k, stream(cfg.seed, Stream.EVAL, cfg.train.rounds, device))
    titles = _titles(cfg.data.path)
    rows = []
    for rank, (item, score) in enumerate(zip(items, scores), start=1):
        raw = int(users.data.item_ids[item])
        row = {"rank": rank, "item": raw, "score": float(score)}
        if titles:
            row["title"] = titles.get(raw, "")
        rows.append(row)
    return rows


def _titles(path: str | None) -> dict[int, str]:
    """Movie titles from a MovieLens movies.csv next to the ratings, when present."""
    if not path:
        return {}
    base = Path(path)
    base = base if base.is_dir() else base.parent
    movies = base / "movies.csv"
    if not movies.is_file():
        return {}
    import pyarrow.csv as pacsv

    t = pacsv.read_csv(movies).to_pydict()
    return dict(zip(t["movieId"], t["title"]))
