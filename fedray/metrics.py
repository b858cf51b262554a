"""Per-round metrics: Parquet records, the end-of-run summary table and the PNG of learning curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table


def read_metrics(run_dir: str | Path) -> pa.Table:
    """The per-round records a run wrote."""
    return pq.read_table(Path(run_dir) / "metrics.parquet")


def summarize(records: list[dict]) -> list[dict]:
    """One row per group: final quality, traffic against float32, wall and simulated time."""
    rows = []
    for gid in sorted({r["group"] for r in records}):
        rs = [r for r in records if r["group"] == gid]
        evaluated = [r for r in rs if r["hr10"] == r["hr10"]]
        last = evaluated[-1] if evaluated else {"hr10": float("nan"), "ndcg10": float("nan")}
        up = sum(r["bytes_up"] for r in rs)
        up32 = sum(r["bytes_up_float32"] for r in rs)
        rows.append({
            "group": gid, "rounds": len(rs), "hr10": last["hr10"], "ndcg10": last["ndcg10"],
            "mb_up": up / 1e6, "mb_up_float32": up32 / 1e6, "compression": up32 / up if up else float("nan"),
            "mb_down": sum(r["bytes_down"] for r in rs) / 1e6,
            "bits_per_element": float(np.mean([r["bits_per_element"] for r in rs])),
            "rejected": sum(r["rejected"] for r in rs), "failures": sum(r["failures"] for r in rs),
            "stragglers": sum(r["stragglers"] for r in rs),
            "wall_s": sum(r["wall_s"] for r in rs) / max(1, len({r["group"] for r in records})),
            "sim_time_s": rs[-1]["sim_time_s"],
        })
    return rows


def summary_table(rows: list[dict], title: str = "fedray run summary") -> Table:
    """A rich table of summarize() rows."""
    table = Table(title=title)
    cols = [("group", "group", "{}"), ("rounds", "rounds", "{}"), ("hr10", "HR@10", "{:.4f}"),
            ("ndcg10", "NDCG@10", "{:.4f}"), ("mb_up", "MB up", "{:.2f}"), ("mb_up_float32", "MB up f32", "{:.1f}"),
            ("compression", "vs f32", "{:.1f}x"), ("bits_per_element", "bits/el", "{:.3f}"),
            ("rejected", "rejected", "{}"), ("failures", "failed", "{}"), ("stragglers", "late", "{}"),
            ("wall_s", "wall s", "{:.1f}"), ("sim_time_s", "sim s", "{:.1f}")]
    for _, label, _ in cols:
        table.add_column(label, justify="right")
    for row in rows:
        table.add_row(*[fmt.format(row[name]) for name, _, fmt in cols])
    return table


def plot_curves(records: list[dict], out: str | Path, x: str = "round") -> Path:
    """PNG of HR@10 and NDCG@10 per group against rounds (or simulated time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for gid in sorted({r["group"] for r in records}):
        rs = [r for r in records if r["group"] == gid and r["hr10"] == r["hr10"]]
        xs = [r[x] + (1 if x == "round" else 0) for r in rs]
        axes[0].plot(xs, [r["hr10"] for r in rs], marker="o", label=f"group {gid}")
        axes[1].plot(xs, [r["ndcg10"] for r in rs], marker="o", label=f"group {gid}")
    for ax, name in zip(axes, ("HR@10", "NDCG@10")):
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
