"""Per-round metrics: Parquet records, the end-of-run summary table and the PNG of learning curves."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table

from fedray.engine.records import COLUMNS


def read_metrics(run_dir: str | Path) -> pa.Table:
    """The per-round records a run wrote."""
    return pq.read_table(Path(run_dir) / "metrics.parquet")


def metric_names(records: list[dict]) -> list[str]:
    """The task's metric columns of metrics.parquet rows (every column that is not a round-record field)."""
    return sorted({k for r in records for k in r if k not in COLUMNS})


def summarize(records: list[dict]) -> list[dict]:
    """One row per group: its latest metrics, traffic against float32, wall and simulated time."""
    names = metric_names(records)
    rows = []
    n_groups = max(1, len({r["group"] for r in records}))
    for gid in sorted({r["group"] for r in records}):
        rs = [r for r in records if r["group"] == gid]
        latest = {}
        for name in names:
            values = [r[name] for r in rs if r.get(name) is not None and not math.isnan(r[name])]
            latest[name] = values[-1] if values else float("nan")
        up = sum(r["bytes_up"] for r in rs)
        up32 = sum(r["bytes_up_float32"] for r in rs)
        rows.append({
            "group": gid, "rounds": len(rs), **latest,
            "mb_up": up / 1e6, "mb_up_float32": up32 / 1e6, "compression": up32 / up if up else float("nan"),
            "mb_down": sum(r["bytes_down"] for r in rs) / 1e6,
            "bits_per_element": float(np.mean([r["bits_per_element"] for r in rs])),
            "rejected": sum(r["rejected"] for r in rs), "failures": sum(r["failures"] for r in rs),
            "stragglers": sum(r["stragglers"] for r in rs),
            "wall_s": sum(r["wall_s"] for r in rs) / n_groups,
            "sim_time_s": rs[-1]["sim_time_s"],
            "epsilon": float(rs[-1].get("epsilon", float("nan"))),
        })
    return rows


LABELS = {"hr10": "HR@10", "ndcg10": "NDCG@10", "auc": "AUC", "accuracy": "accuracy", "loss": "loss"}


def summary_table(rows: list[dict], title: str = "fedray run summary") -> Table:
    """A rich table of summarize() rows, with a column per task metric."""
    table = Table(title=title)
    names = [k for k in (rows[0] if rows else {}) if k not in ("group", "rounds") and k in metric_names(rows)
             and k not in ("mb_up", "mb_up_float32", "compression", "mb_down", "bits_per_element", "rejected",
                           "failures", "stragglers", "wall_s", "sim_time_s")]
    cols = [("group", "group", "{}"), ("rounds", "rounds", "{}"),
            *[(n, LABELS.get(n, n), "{:.4f}") for n in names],
            ("mb_up", "MB up", "{:.2f}"), ("mb_up_float32", "MB up f32", "{:.1f}"),
            ("compression", "vs f32", "{:.1f}x"), ("bits_per_element", "bits/el", "{:.3f}"),
            ("rejected", "rejected", "{}"), ("failures", "failed", "{}"), ("stragglers", "late", "{}"),
            ("wall_s", "wall s", "{:.1f}"), ("sim_time_s", "sim s", "{:.1f}")]
    if any(not math.isnan(row.get("epsilon", math.nan)) for row in rows):  # DP runs: epsilon spent at privacy.delta
        cols.append(("epsilon", "epsilon", "{:.3f}"))
    for _, label, _ in cols:
        table.add_column(label, justify="right")
    for row in rows:
        table.add_row(*[fmt.format(row[name]) for name, _, fmt in cols])
    return table


def plot_curves(records: list[dict], out: str | Path, x: str = "round") -> Path:
    """PNG of every task metric per group against rounds (or simulated time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metric_names(records) or ["train_loss"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for gid in sorted({r["group"] for r in records}):
            rs = [r for r in records if r["group"] == gid and r.get(name) is not None and not math.isnan(r[name])]
            ax.plot([r[x] + (1 if x == "round" else 0) for r in rs], [r[name] for r in rs], marker="o", label=f"group {gid}")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(LABELS.get(name, name))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
