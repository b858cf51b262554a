"""Device-side recommendation from a finished run: global model + the user's private vector -> top-k products."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fedray.checkpoint import table_to_arrays
from fedray.config import load_config, to_plain
from fedray.data import DataError, load_recdata
from fedray.horizontal.device import DeviceFleet
from fedray.horizontal.host import load_local_state
from fedray.models.recommender import ModelSpec


def recommend(run_dir: Path, user_id: int, k: int = 10) -> list[dict]:
    """Top-k unseen items for a user (raw id), ranked by the user's group model as its device would rank them."""
    cfg = load_config(run_dir / "config.yaml")
    data = load_recdata(cfg.data, cfg.seed)
    idx = np.flatnonzero(data.user_ids == user_id)
    if len(idx) == 0:
        raise DataError(f"user {user_id} is not in the run's data ({cfg.data.path or 'synthetic'})")
    device = int(idx[0])
    group = 0
    if (run_dir / "grouping.parquet").is_file():
        grouping = pq.read_table(run_dir / "grouping.parquet").to_pydict()
        group = int(grouping["group"][grouping["device"].index(device)])
    spec_json = json.loads((run_dir / "models" / "specs.json").read_text())[str(group)] \
        if (run_dir / "models" / "specs.json").is_file() else None
    params = table_to_arrays(pq.read_table(run_dir / "models" / f"group-{group}.parquet"))
    spec = ModelSpec(**{**spec_json, "hidden": tuple(spec_json["hidden"])}) if spec_json else \
        ModelSpec(data.n_items, cfg.model.dim, tuple(cfg.model.hidden), cfg.model.kind)
    fleet = DeviceFleet(to_plain(cfg), data, np.array([device]))
    user = load_local_state(run_dir).get(device)
    if user is not None:
        fleet.states[device].user = user
    items, scores = fleet.recommend(device, params, spec, k, round_=cfg.train.rounds)
    titles = _titles(cfg.data.path)
    rows = []
    for rank, (item, score) in enumerate(zip(items, scores), start=1):
        raw = int(data.item_ids[item])
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
