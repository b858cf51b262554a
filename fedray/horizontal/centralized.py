"""Centralized baseline job: the same recommender trained on pooled data in one process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig
from rich.console import Console

from fedray.checkpoint import arrays_to_table
from fedray.data import eval_negatives, load_recdata, materialize
from fedray.metrics import plot_curves, summarize, summary_table
from fedray.models.centralized import train_centralized
from fedray.models.recommender import ModelSpec, rank_metrics


def run_centralized(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> list[dict]:
    """Train on pooled data for `centralized_epochs`, evaluating like the federated runs; returns summary rows."""
    import torch

    torch.set_num_threads(1)
    console = console or Console()
    data = materialize(load_recdata(cfg.data, cfg.seed))
    spec = ModelSpec(data.n_items, cfg.model.dim, tuple(cfg.model.hidden), cfg.model.kind)
    users = np.arange(data.n_users)
    negs = eval_negatives(data, users, cfg.data.eval_negatives, cfg.seed)
    records = []

    def on_epoch(epoch: int, loss: float, params: dict, user_table: np.ndarray) -> None:
        hits, ndcg = rank_metrics(params, user_table, data.test_items, negs, spec)
        records.append({"round": epoch, "group": 0, "train_loss": loss, "hr10": float(hits.mean()),
                        "ndcg10": float(ndcg.mean()), "bytes_up": 0.0, "bytes_up_float32": 0.0, "bytes_down": 0.0,
                        "bits_per_element": 32.0, "rejected": 0, "failures": 0, "stragglers": 0, "wall_s": 0.0,
                        "sim_time_s": 0.0})
        console.print(f"epoch {epoch + 1}: loss {loss:.4f} HR@10 {hits.mean():.4f} NDCG@10 {ndcg.mean():.4f}")

    c = cfg.centralized
    params, user_table = train_centralized(data, spec, epochs=c.epochs, batch=c.batch_size, lr=c.lr,
                                           negatives=cfg.train.negatives, init_std=cfg.model.init_std,
                                           seed=cfg.seed, on_epoch=on_epoch)
    models = Path(run_dir) / "models"
    models.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrays_to_table(params), models / "group-0.parquet")
    pq.write_table(pa.Table.from_pylist(records), Path(run_dir) / "metrics.parquet")
    rows = summarize(records)
    console.print(summary_table(rows, f"fedray centralized run: {run_dir}"))
    plot_curves(records, Path(run_dir) / "curves.png")
    (Path(run_dir) / "summary.json").write_text(json.dumps(rows, indent=1))
    return rows
